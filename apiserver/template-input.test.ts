import { describe, expect, it } from "vitest";
import type { Template } from "../crds/index.ts";
import {
  refuseUnsupportedRegistration,
  registrationZones,
  requireKvm,
  templateChecksum,
  templateFormat,
  templateName,
  templateUpdate,
} from "./template-input.ts";
import { refusal } from "./testing/refusal.ts";

const HEX = "ab".repeat(32);
const params =
  (values: Record<string, string>) =>
  (name: string): string | undefined =>
    values[name];

describe("templateChecksum", () => {
  it.each([
    [`{SHA-256}${HEX}`, `sha256:${HEX}`],
    [`{sha-256}${HEX.toUpperCase()}`, `sha256:${HEX}`],
    [`{SHA256}${HEX}`, `sha256:${HEX}`],
    [undefined, undefined],
    ["", undefined],
  ])("keeps %s as %s", (value, expected) => {
    expect(templateChecksum(value)).toBe(expected);
  });

  it("refuses what the agents cannot verify: MD5, bare (MD5 in CloudStack), other algorithms", () => {
    expect(refusal(() => templateChecksum(`{MD5}${"a".repeat(32)}`))).toMatch(
      /algorithm MD5 cannot be verified/,
    );
    expect(refusal(() => templateChecksum("a".repeat(32)))).toMatch(/without \{algorithm\} is MD5/);
    expect(refusal(() => templateChecksum(HEX))).toMatch(/\{SHA-256\}<64 hex digits>/);
    expect(refusal(() => templateChecksum(`{SHA-1}${"a".repeat(40)}`))).toMatch(/SHA-1/);
  });

  it("refuses a SHA-256 checksum of the wrong length or with non-hex digits", () => {
    expect(refusal(() => templateChecksum("{SHA-256}abc"))).toMatch(/64 hex digits, this one has 3/);
    expect(refusal(() => templateChecksum(`{SHA-256}${"g".repeat(64)}`))).toMatch(/64 hex digits/);
  });
});

describe("formats, hypervisor, names", () => {
  it("reads QCOW2 and RAW in any case and refuses the others", () => {
    expect(templateFormat("QCOW2")).toBe("qcow2");
    expect(templateFormat("raw")).toBe("raw");
    for (const other of ["ISO", "VHD", "OVA", "VMDK"])
      expect(refusal(() => templateFormat(other))).toMatch(`Image format ${other} is not supported`);
  });

  it("accepts KVM only", () => {
    expect(() => requireKvm("kvm")).not.toThrow();
    expect(refusal(() => requireKvm("XenServer"))).toMatch(/Stratus runs KVM/);
  });

  it("lower-cases names and refuses what is no DNS label", () => {
    expect(templateName("Debian-12")).toBe("debian-12");
    expect(refusal(() => templateName("Debian 12"))).toMatch(/lower-case letters, digits and hyphens/);
  });
});

describe("registrationZones", () => {
  const zones: Record<string, string> = { "id-1": "z1", "id-2": "z2" };
  const zoneName = (id: string) => zones[id];

  it("reads zoneid, zoneids and -1 (every zone)", () => {
    expect(registrationZones(params({ zoneid: "id-1" }), zoneName)).toEqual(["z1"]);
    expect(registrationZones(params({ zoneids: "id-1, id-2,id-1" }), zoneName)).toEqual(["z1", "z2"]);
    expect(registrationZones(params({ zoneid: "-1" }), zoneName)).toBeUndefined();
    expect(registrationZones(params({ zoneids: "-1" }), zoneName)).toBeUndefined();
  });

  it("refuses no zone, both parameters, and an unknown zone", () => {
    expect(refusal(() => registrationZones(params({}), zoneName))).toMatch(/Either zoneid or zoneids/);
    expect(refusal(() => registrationZones(params({ zoneid: "id-1", zoneids: "id-2" }), zoneName))).toMatch(
      /Both zoneid and zoneids/,
    );
    expect(refusal(() => registrationZones(params({ zoneids: "id-1,nope" }), zoneName))).toBe(
      "Unable to find zone by id nope",
    );
  });
});

describe("refuseUnsupportedRegistration", () => {
  it("accepts what an administrator's registration means in Stratus", () => {
    expect(() =>
      refuseUnsupportedRegistration(
        params({ ispublic: "true", isfeatured: "true", isextractable: "false", templatetype: "user" }),
      ),
    ).not.toThrow();
  });

  it.each([
    [{ ispublic: "false" }, /ispublic=false/],
    [{ isfeatured: "false" }, /isfeatured=false/],
    [{ isextractable: "true" }, /extractTemplate/],
    [{ directdownload: "true" }, /directdownload/],
    [{ templatetype: "SYSTEM" }, /templatetype=SYSTEM/],
    [{ projectid: "p" }, /cluster-wide/],
    [{ details: "x" }, /does not keep them/],
    [{ arch: "aarch64" }, /x86_64/],
    [{ requireshvm: "false" }, /HVM/],
    [{ bits: "32" }, /64-bit/],
    [{ sshkeyenabled: "false" }, /config drive/],
  ])("refuses %o", (values, message) => {
    expect(refusal(() => refuseUnsupportedRegistration(params(values)))).toMatch(message);
  });

  it("refuses details in CloudStack's map form, which arrive as parameters of their own", () => {
    expect(
      refusal(() =>
        refuseUnsupportedRegistration(params({}), ["name", "details[0].key", "details[0].value"]),
      ),
    ).toMatch(/details\[/);
  });
});

describe("templateUpdate", () => {
  const template = {
    metadata: { name: "debian" },
    spec: { source: { url: "http://example.com/d.qcow2" }, format: "qcow2" },
  } as Template;

  it("patches display text, OS type and password support", () => {
    expect(
      templateUpdate(
        template,
        params({
          displaytext: "Debian 12",
          ostypeid: "Debian GNU/Linux 12 (64-bit)",
          passwordenabled: "TRUE",
        }),
      ),
    ).toEqual({
      spec: { displayName: "Debian 12", osType: "Debian GNU/Linux 12 (64-bit)", passwordEnabled: true },
    });
    expect(templateUpdate(template, params({ name: "Debian", format: "QCOW2" }))).toBeUndefined();
  });

  it("refuses a new name, a new format and what Stratus does not keep", () => {
    expect(refusal(() => templateUpdate(template, params({ name: "other" })))).toMatch(
      /name cannot be changed/,
    );
    expect(refusal(() => templateUpdate(template, params({ format: "RAW" })))).toMatch(/its image is QCOW2/);
    expect(refusal(() => templateUpdate(template, params({ sortkey: "1" })))).toMatch(/sortkey/);
  });
});
