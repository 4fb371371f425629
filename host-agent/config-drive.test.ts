// The config drive built by the real xorriso and read back with it.
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ConfigDriveContent,
  ConfigDriveError,
  configDriveFiles,
  ensureConfigDrive,
  needsConfigDrive,
  PASSWORD_RESET_SCRIPT,
  readConfigDrive,
  removeConfigDrive,
  requireXorriso,
} from "./config-drive.ts";
import { HAS_XORRISO } from "./testing/xorriso.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1cQ2n7b6eV8bq0n0m5b7xK6U1o3i2m0z9kYq9kYq9k user@laptop";
const content: ConfigDriveContent = {
  vm: { uid: "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90", name: "web-1", namespace: "team-a" },
  zone: "zone-1",
  serviceOffering: "small",
  publicKeys: [KEY],
  userData: Buffer.from("#cloud-config\nruncmd:\n  - touch /tmp/ran\n"),
  password: "s3cret-Pass",
  nics: [
    {
      mac: "52:54:00:0b:8e:5c",
      ipv4: { address: "10.1.2.42", prefixLength: 24, gateway: "10.1.2.1" },
      dns: ["10.1.2.1"],
    },
    { mac: "52:54:00:0b:8e:5d", dns: [] },
  ],
};

describe("config drive content", () => {
  it("lays out OpenStack's meta_data, user_data and network_data, and CloudStack's folder", () => {
    const files = configDriveFiles(content);
    const meta = JSON.parse(files.get("openstack/latest/meta_data.json")?.toString() ?? "{}");
    expect(meta).toMatchObject({ uuid: content.vm.uid, hostname: "web-1", public_keys: { "key-0": KEY } });
    expect(files.get("openstack/latest/user_data")?.toString()).toContain("touch /tmp/ran");
    const network = JSON.parse(files.get("openstack/latest/network_data.json")?.toString() ?? "{}");
    expect(network.links[0]).toMatchObject({ ethernet_mac_address: "52:54:00:0b:8e:5c", type: "phy" });
    expect(network.networks[0]).toMatchObject({
      type: "ipv4",
      ip_address: "10.1.2.42",
      netmask: "255.255.255.0",
      routes: [{ gateway: "10.1.2.1" }],
    });
    expect(network.networks[1]).toMatchObject({ type: "ipv4_dhcp", link: "eth1" });
    expect(network.services).toEqual([{ type: "dns", address: "10.1.2.1" }]);
    expect(files.get("cloudstack/metadata/vm-id.txt")?.toString()).toBe(content.vm.uid);
    expect(files.get("cloudstack/metadata/local-hostname.txt")?.toString()).toBe("web-1");
    expect(files.get("cloudstack/metadata/public-keys.txt")?.toString()).toBe(`${KEY}\n`);
    expect(files.get("cloudstack/userdata/user_data.txt")?.toString()).toContain("touch /tmp/ran");
    expect(files.get("cloudstack/password/vm_password.txt")?.toString()).toBe("s3cret-Pass");
    // cloud-init sets the password from vendor data.
    const vendor = JSON.parse(files.get("openstack/latest/vendor_data.json")?.toString() ?? "{}");
    expect(vendor["cloud-init"]).toMatch(/^#cloud-config\n.*"password":"s3cret-Pass"/);
  });

  it("leaves out what the VM does not have", () => {
    const { vm, zone, serviceOffering, publicKeys, nics } = content;
    const files = configDriveFiles({ vm, zone, serviceOffering, publicKeys, nics });
    expect(files.has("openstack/latest/user_data")).toBe(false);
    expect(files.has("cloudstack/password/vm_password.txt")).toBe(false);
    // No password, but the boot command that applies a later reset (cloud-init sets one once).
    const vendor = JSON.parse(files.get("openstack/latest/vendor_data.json")?.toString() ?? "{}");
    const config = JSON.parse((vendor["cloud-init"] as string).replace("#cloud-config\n", ""));
    expect(config.password).toBeUndefined();
    expect(config.bootcmd).toEqual([PASSWORD_RESET_SCRIPT]);
    expect(needsConfigDrive({ publicKeys: [] })).toBe(false);
    expect(needsConfigDrive({ publicKeys: [KEY] })).toBe(true);
  });

  it("refuses user data over 32 KiB and keys over several lines, saying why", () => {
    expect(() => configDriveFiles({ ...content, userData: Buffer.alloc(32 * 1024 + 1) })).toThrow(
      /user data is 32769 bytes; a config drive takes at most 32768/,
    );
    expect(() => configDriveFiles({ ...content, publicKeys: [`${KEY}\nssh-rsa AAAA x`] })).toThrow(
      ConfigDriveError,
    );
  });
});

describe("without xorriso", () => {
  it("says what to install (the agent refuses to start on a real hypervisor with this message)", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await expect(requireXorriso()).rejects.toThrow("xorriso is not installed (Debian's xorriso)");
    } finally {
      process.env.PATH = path;
    }
  });
});

describe.skipIf(!HAS_XORRISO)("config drive ISO (needs Debian xorriso, which .ci/run installs)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "stratus-config-drive-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes an ISO labelled config-2 that reads back with every file, and rebuilds only on change", async () => {
    const iso = join(dir, "drive.iso");
    expect(await ensureConfigDrive(content, iso)).toBe(true);
    const { label, files } = await readConfigDrive(iso);
    expect(label).toBe("config-2");
    expect(JSON.parse(files.get("openstack/latest/meta_data.json") ?? "{}").uuid).toBe(content.vm.uid);
    expect(files.get("openstack/latest/user_data")).toContain("touch /tmp/ran");
    expect(files.get("cloudstack/metadata/public-keys.txt")).toBe(`${KEY}\n`);
    expect(files.has("openstack/latest/network_data.json")).toBe(true);

    const built = (await stat(iso)).mtimeMs;
    expect(await ensureConfigDrive(content, iso)).toBe(false);
    expect((await stat(iso)).mtimeMs).toBe(built);
    expect(await ensureConfigDrive({ ...content, publicKeys: [] }, iso)).toBe(true);
    expect((await readConfigDrive(iso)).files.has("cloudstack/metadata/public-keys.txt")).toBe(false);

    await removeConfigDrive(iso);
    await expect(stat(iso)).rejects.toMatchObject({ code: "ENOENT" });
  });
});
