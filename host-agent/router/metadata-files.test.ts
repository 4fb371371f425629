import { describe, expect, it } from "vitest";
import { metadataFiles, metadataPath } from "./metadata-files.ts";

describe("the router's metadata service layout", () => {
  it("answers CloudStack's paths from the guest's config-drive content, with the index cloud-init crawls", () => {
    const files = metadataFiles(
      {
        vm: { uid: "u-1", name: "web", namespace: "acct" },
        zone: "z1",
        serviceOffering: "small",
        publicKeys: ["ssh-ed25519 AAAA key"],
        userData: Buffer.from("#cloud-config\n"),
        nics: [],
      },
      "10.1.1.5",
      "198.51.100.10",
    );
    expect(files.get("latest/user-data")?.toString()).toBe("#cloud-config\n");
    expect(files.get("latest/meta-data/local-ipv4")?.toString()).toBe("10.1.1.5");
    expect(files.get("latest/meta-data/public-keys")?.toString()).toBe("ssh-ed25519 AAAA key\n");
    expect(
      files
        .get(metadataPath("/latest/meta-data/") as string)
        ?.toString()
        .split("\n"),
    ).toContain("instance-id");
  });

  it("maps only the layout's own names to files, never a way out of the guest's directory", () => {
    expect(metadataPath("/latest/user-data")).toBe("latest/user-data");
    expect(metadataPath("/latest/meta-data/instance-id?x=1")).toBe("latest/meta-data/instance-id");
    for (const bad of [
      "/latest/meta-data/../../10.1.1.6/latest/user-data",
      "/latest/meta-data/%2e%2e",
      "/../etc/passwd",
      "/latest/meta-data/index/x",
      "/latest/password",
    ])
      expect(metadataPath(bad)).toBeUndefined();
  });
});
