import { describe, expect, it } from "vitest";
import { buildDomainXml, configDriveIn, type DomainSpec, isoIn } from "./domain-xml.ts";
import { destinationXml } from "./migration-xml.ts";
import { bridgeName, libvirtNetworkName } from "./network-xml.ts";

const source = { cluster: "c1", host: "h1" };
const target = { cluster: "c1", host: "h2" };
const network = "0b6f8a52-6d3c-4a53-9a3e-0ad1d1e3a001";

const guest = {
  vm: { namespace: "team-a", name: "web", uid: "7b6f8a52-6d3c-4a53-9a3e-0ad1d1e3a002" },
  owner: source,
  type: "qemu",
  vcpus: 1,
  memoryBytes: 128n * 1024n * 1024n,
  disks: [{ path: "/shared/root-1", format: "qcow2", serial: "root" }],
} satisfies Omit<DomainSpec, "nics">;

describe("destinationXml", () => {
  const xml = buildDomainXml({
    ...guest,
    nics: [{ mac: "52:54:00:00:00:01", network: libvirtNetworkName(source, network) }],
    consoleSocket: "/run/stratus/console/h1/web.sock",
  }).replace("/>\n      <model", ` portid='abc' bridge='${bridgeName(source, network)}'/>\n      <model`);

  it("names the target's network and bridge, drops the port id, and moves the console socket", () => {
    const out = destinationXml(xml, source, {
      owner: target,
      consoleSocket: "/run/stratus/console/h2/web.sock",
    });
    expect(out).toContain(`network='${libvirtNetworkName(target, network)}'`);
    expect(out).toContain(`bridge='${bridgeName(target, network)}'`);
    expect(out).not.toContain(libvirtNetworkName(source, network));
    expect(out).not.toContain("portid");
    expect(out.match(/path='\/run\/stratus\/console\/h2\/web.sock'/g)).toHaveLength(2);
    expect(out).not.toContain("/console/h1/");
  });

  it("keeps the disks and the source's owner mark (the target adopts the guest once it is bound there)", () => {
    const out = destinationXml(xml, source, { owner: target });
    expect(out).toContain("<source file='/shared/root-1'/>");
    expect(out).toContain("host='h1'");
    expect(out).toContain("/run/stratus/console/h1/web.sock");
  });

  describe("the config drive, a file of the source host", () => {
    const withDrive = buildDomainXml({
      ...guest,
      nics: [],
      configDrive: "/var/lib/stratus/h1/cache/config-drives/web.iso",
    });

    it("points at the copy the target built", () => {
      const out = destinationXml(withDrive, source, {
        owner: target,
        configDrive: "/var/lib/stratus/h2/cache/config-drives/web.iso",
      });
      expect(configDriveIn(out)).toBe("/var/lib/stratus/h2/cache/config-drives/web.iso");
      expect(out).toContain("<source file='/shared/root-1'/>");
      expect(out).not.toContain("/h1/cache/");
    });

    it("arrives without media when the target built none, keeping the CD-ROM device", () => {
      const out = destinationXml(withDrive, source, { owner: target });
      expect(configDriveIn(out)).toBeUndefined();
      expect(out).toMatch(/<disk type='file' device='cdrom'>[\s\S]*?<target dev='hdc' bus='ide'\/>/);
      expect(out).toContain("<source file='/shared/root-1'/>");
    });

    it("leaves the ISO drive's disc as it is when the target copied none", () => {
      const withDisc = buildDomainXml({
        ...guest,
        nics: [],
        configDrive: "/h1/cd.iso",
        iso: "/cache/iso-1.raw",
      });
      const out = destinationXml(withDisc, source, { owner: target, configDrive: "/h2/cd.iso" });
      expect(isoIn(out)).toBe("/cache/iso-1.raw");
      expect(configDriveIn(out)).toBe("/h2/cd.iso");
    });

    it("points the ISO drive at the target's copy of the disc", () => {
      const withDisc = buildDomainXml({ ...guest, nics: [], iso: "/h1/cache/iso-1.raw" });
      const out = destinationXml(withDisc, source, { owner: target, iso: "/h2/cache/iso-1.raw" });
      expect(isoIn(out)).toBe("/h2/cache/iso-1.raw");
      expect(out).not.toContain("/h1/cache/");
    });
  });
});
