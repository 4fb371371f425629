import { X509Certificate } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createCertificateAuthority, distinguishedName, issueCertificate } from "./pki.ts";

describe("certificates for the local control plane", () => {
  it("issues client certificates whose subject carries the user and groups", async () => {
    const ca = await createCertificateAuthority("test-ca");
    const issued = await issueCertificate(ca, {
      commonName: "alice",
      organizations: ["dev", "system:masters"],
      usage: "client",
    });
    const certificate = new X509Certificate(issued.certPem);
    const authority = new X509Certificate(ca.certPem);
    expect(certificate.checkIssued(authority)).toBe(true);
    expect(certificate.verify(authority.publicKey)).toBe(true);
    expect(certificate.subject.split("\n")).toEqual(["CN=alice", "O=dev", "O=system:masters"]);
    expect(certificate.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(authority.ca).toBe(true);
    expect(certificate.ca).toBe(false);
  });

  it("puts DNS names and IP addresses into serving certificates", async () => {
    const ca = await createCertificateAuthority("test-ca");
    const issued = await issueCertificate(ca, {
      commonName: "api",
      usage: "server",
      dnsNames: ["localhost", "stratus-api.stratus-system.svc"],
      ipAddresses: ["127.0.0.1"],
    });
    const certificate = new X509Certificate(issued.certPem);
    expect(certificate.checkHost("stratus-api.stratus-system.svc")).toBe("stratus-api.stratus-system.svc");
    expect(certificate.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(certificate.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]);
  });

  it("escapes group names so they cannot add subject attributes", () => {
    expect(distinguishedName("bob", ["a,O=system:masters"])).toBe("CN=bob, O=a\\,O\\=system:masters");
  });
});
