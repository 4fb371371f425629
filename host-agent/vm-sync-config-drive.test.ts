// The VM loop and the config drive, on the fake hypervisor with a real xorriso: a VM with SSH keys
// boots with its drive, a stopped one gets its new content at the next start, and the drive goes
// with the VM.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { readConfigDrive } from "./config-drive.ts";
import { configDrivePath } from "./guest-data.ts";
import { preparedVm } from "./testing/fixtures.ts";
import { VmSyncRig } from "./testing/vm-sync-rig.ts";
import { HAS_XORRISO } from "./testing/xorriso.ts";

const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@host";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@host";

describe.skipIf(!HAS_XORRISO)(
  "the VM loop builds config drives (needs Debian xorriso, which .ci/run installs)",
  () => {
    let rig: VmSyncRig;
    let cache: string;
    beforeEach(async () => {
      cache = await mkdtemp(join(tmpdir(), "stratus-vm-drive-"));
      rig = new VmSyncRig();
      rig.cache = cache;
      rig.guestData = {
        secrets: async () => ({ userData: Buffer.from("#cloud-config\n").toString("base64") }),
        publicKey: async (_namespace, name) => (name === "laptop" ? KEY_B : undefined),
      };
      rig.sync = rig.newSync();
    });
    afterEach(async () => {
      await rm(cache, { recursive: true, force: true });
    });

    it("starts the guest with its drive, rebuilds it while stopped, removes it with the VM", async () => {
      const key = rig.put(preparedVm("web", { spec: { sshKeys: [KEY_A], userDataSecret: "web-userdata" } }));
      await rig.run(key);
      const uid = rig.vm(key).metadata.uid as string;
      const iso = configDrivePath(cache, uid);
      expect(rig.hv.domains.get(uid)?.state).toBe("running");
      expect(rig.hv.domains.get(uid)?.spec.configDrive).toBe(iso);
      const first = await readConfigDrive(iso);
      expect(first.label).toBe("config-2");
      expect(first.files.get("cloudstack/metadata/public-keys.txt")).toBe(`${KEY_A}\n`);
      expect(first.files.get("openstack/latest/user_data")).toBe("#cloud-config\n");

      // A key pair added while it runs reaches the guest at its next start, not before.
      rig.edit(key, { keyPairs: ["laptop"] });
      await rig.run(key);
      expect((await readConfigDrive(iso)).files.get("cloudstack/metadata/public-keys.txt")).toBe(
        `${KEY_A}\n`,
      );
      rig.edit(key, { runStrategy: "Halted" });
      await rig.run(key);
      rig.edit(key, { runStrategy: "Always" });
      await rig.run(key);
      expect(rig.hv.domains.get(uid)?.state).toBe("running");
      expect((await readConfigDrive(iso)).files.get("cloudstack/metadata/public-keys.txt")).toBe(
        `${KEY_A}\n${KEY_B}\n`,
      );

      rig.markDeleted(key);
      await rig.run(key);
      expect(rig.hv.domains.has(uid)).toBe(false);
      expect(existsSync(iso)).toBe(false);
    });

    it("holds a VM whose key pair is missing, saying which", async () => {
      const key = rig.put(preparedVm("web", { spec: { keyPairs: ["gone"] } }));
      await rig.run(key);
      const uid = rig.vm(key).metadata.uid as string;
      expect(rig.hv.domains.has(uid)).toBe(false);
      const ready = rig.vm(key).status?.conditions?.find((c) => c.type === "Ready");
      expect(ready).toMatchObject({ status: "False", reason: "KeyPairNotFound" });
      expect(ready?.message).toContain('"gone"');
    });

    it("gives a VM with nothing to tell its guest no drive", async () => {
      const key = rig.put(preparedVm("web"));
      await rig.run(key);
      const uid = rig.vm(key).metadata.uid as string;
      expect(rig.hv.domains.get(uid)?.spec.configDrive).toBeUndefined();
      expect(existsSync(configDrivePath(cache, uid))).toBe(false);
    });
  },
);
