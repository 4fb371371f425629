import { describe, expect, it } from "vitest";
import {
  buildDomainXml,
  configDriveIn,
  type DomainSpec,
  disksIn,
  domainMetadataIn,
  domainName,
  isoIn,
  macFor,
  vmUidOf,
} from "./domain-xml.ts";

const UID = "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90";
const base: DomainSpec = {
  vm: { namespace: "team-a", name: "web-1", uid: UID },
  owner: { cluster: "c0ffee00-0000-4000-8000-000000000001", host: "h1" },
  type: "qemu",
  vcpus: 2,
  memoryBytes: 512n * 1024n * 1024n,
  disks: [
    { path: "/var/lib/stratus/pools/local/root.qcow2", format: "qcow2", serial: "root" },
    { path: "/var/lib/stratus/pools/local/data.qcow2", format: "qcow2", serial: "data" },
  ],
  nics: [{ mac: "52:54:00:0b:8e:5c", network: "stratus-net-1" }],
};

describe("domain XML", () => {
  it("names the domain after the VM UID and records the VM in metadata", () => {
    const xml = buildDomainXml(base);
    expect(xml).toContain(`<name>stratus-${UID}</name>`);
    expect(xml).toContain(`<uuid>${UID}</uuid>`);
    expect(xml).toContain("namespace='team-a' name='web-1'");
    expect(xml).toContain("<memory unit='KiB'>524288</memory>");
    expect(xml).toContain("<vcpu placement='static'>2</vcpu>");
    // libvirt's DAC driver gives QEMU (and only QEMU) access to the disks while the domain runs.
    expect(xml).not.toContain("<seclabel");
  });

  it("gives the guest Nova's timers: no HPET, an RTC and a PIT that catch up", () => {
    const xml = buildDomainXml(base);
    expect(xml).toContain("<timer name='hpet' present='no'/>");
    expect(xml).toContain("<timer name='rtc' tickpolicy='catchup'/>");
    expect(xml).toContain("<timer name='pit' tickpolicy='delay'/>");
    expect(xml).toMatch(/<\/features>\n {2}<clock offset='utc'>[\s\S]*<\/clock>\n {2}<on_poweroff>/);
  });

  it("attaches disks in order as vda, vdb on virtio, and NICs on their networks", () => {
    const xml = buildDomainXml(base);
    expect(xml.indexOf("<target dev='vda' bus='virtio'/>")).toBeLessThan(
      xml.indexOf("<target dev='vdb' bus='virtio'/>"),
    );
    expect(xml).toContain("<source file='/var/lib/stratus/pools/local/data.qcow2'/>");
    expect(xml).toContain("<mac address='52:54:00:0b:8e:5c'/>");
    expect(xml).toContain("<source network='stratus-net-1'/>");
    expect(xml).toContain("<boot dev='hd'/>");
  });

  it("boots a kernel directly and exposes the serial console on a unix socket", () => {
    const xml = buildDomainXml({
      ...base,
      directBoot: {
        kernel: "/cache/vmlinuz",
        initrd: "/cache/initrd.gz",
        commandLine: "console=ttyS0 quiet",
      },
      consoleSocket: "/run/stratus/console/x.sock",
    });
    expect(xml).toContain("<kernel>/cache/vmlinuz</kernel>");
    expect(xml).toContain("<cmdline>console=ttyS0 quiet</cmdline>");
    expect(xml).not.toContain("<boot dev='hd'/>");
    expect(xml).toContain("<source mode='bind' path='/run/stratus/console/x.sock'/>");
  });

  it("attaches the config drive as a read-only IDE CD-ROM, kept apart from the disks", () => {
    const xml = buildDomainXml({ ...base, configDrive: "/cache/config-drives/u.iso" });
    expect(xml).toMatch(
      /<disk type='file' device='cdrom'>\s*<driver name='qemu' type='raw'\/>\s*<source file='\/cache\/config-drives\/u.iso'\/>\s*<target dev='hdc' bus='ide'\/>\s*<readonly\/>/,
    );
    expect(configDriveIn(xml)).toBe("/cache/config-drives/u.iso");
    expect(disksIn(xml).map((d) => d.target)).toEqual(["vda", "vdb"]);
    expect(configDriveIn(buildDomainXml(base))).toBeUndefined();
  });

  it("gives every domain an ISO drive, empty or with its disc, and boots from it before the disk when asked", () => {
    const empty = buildDomainXml(base);
    expect(empty).toMatch(
      /<disk type='file' device='cdrom'>\s*<driver name='qemu' type='raw'\/>\s*<target dev='hdd' bus='ide'\/>/,
    );
    expect(isoIn(empty)).toBeUndefined();
    expect(empty).toContain("<boot dev='hd'/>");
    const installing = buildDomainXml({
      ...base,
      iso: "/cache/iso-1.raw",
      bootFromIso: true,
      configDrive: "/cache/config-drives/u.iso",
    });
    expect(isoIn(installing)).toBe("/cache/iso-1.raw");
    expect(configDriveIn(installing)).toBe("/cache/config-drives/u.iso");
    expect(installing).not.toContain("<boot dev=");
    // Per-device boot order: the ISO drive first, then the root disk (vda), nothing else.
    expect(
      [
        ...installing.matchAll(
          /<target dev='(\w+)'[^>]*\/>\s*(?:<serial>[^<]*<\/serial>\s*)?(?:<readonly\/>\s*)?<boot order='(\d)'/g,
        ),
      ].map((m) => [m[1], m[2]]),
    ).toEqual([
      ["vda", "2"],
      ["hdd", "1"],
    ]);
    expect(disksIn(installing).map((d) => d.target)).toEqual(["vda", "vdb"]);
  });

  it("escapes every value, so a name cannot inject XML", () => {
    const xml = buildDomainXml({
      ...base,
      vm: { ...base.vm, name: "x'/><devices><hostdev", namespace: "a&b" },
    });
    expect(xml).toContain("name='x&apos;/&gt;&lt;devices&gt;&lt;hostdev'");
    expect(xml).toContain("<title>a&amp;b/x&apos;/&gt;&lt;devices&gt;&lt;hostdev</title>");
    expect(xml).not.toContain("<hostdev");
  });

  it("refuses impossible sizes", () => {
    expect(() => buildDomainXml({ ...base, vcpus: 0 })).toThrow("at least one vCPU");
    expect(() => buildDomainXml({ ...base, memoryBytes: 1024n })).toThrow("at least 16 MiB");
  });

  it("maps domain names back to VM UIDs only for Stratus domains", () => {
    expect(vmUidOf(domainName(UID))).toBe(UID);
    expect(vmUidOf("test")).toBeUndefined();
    expect(vmUidOf("stratus-not-a-uid")).toBeUndefined();
  });

  it("derives stable, unicast, locally administered MACs", () => {
    expect(macFor(UID, 0)).toBe("52:54:00:0b:8e:5c");
    expect(macFor(UID, 1)).toBe("52:54:00:0b:8e:5d");
  });

  it("marks the domain with its owner, and reads the mark back as libvirt keeps it", () => {
    const xml = buildDomainXml({ ...base, vm: { ...base.vm, name: "o'brien" } });
    expect(domainMetadataIn(xml)).toEqual({
      owner: { cluster: "c0ffee00-0000-4000-8000-000000000001", host: "h1" },
      vm: { namespace: "team-a", name: "o'brien" },
    });
    // libvirt rewrites the element with its own prefix and double quotes.
    const kept = `<metadata>\n    <stratus:vm xmlns:stratus="https://stratus.io/xmlns/virtualmachine/v1alpha1" namespace="team-a" name="web-1" uid="${UID}" cluster="c1" host="h9"/>\n  </metadata>`;
    expect(domainMetadataIn(kept)).toEqual({
      owner: { cluster: "c1", host: "h9" },
      vm: { namespace: "team-a", name: "web-1" },
    });
    expect(domainMetadataIn("<domain><name>stratus-x</name></domain>")).toEqual({});
  });
});
