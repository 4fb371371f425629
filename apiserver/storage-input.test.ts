import { describe, expect, it } from "vitest";
import { parsePoolUrl, storageType, tagList } from "./storage-input.ts";
import { refusal } from "./testing/refusal.ts";

describe("parsePoolUrl", () => {
  it.each([
    ["SharedMountPoint:///mnt/shared", { type: "sharedMountPoint", path: "/mnt/shared" }],
    ["sharedmountpoint://localhost/mnt/shared/", { type: "sharedMountPoint", path: "/mnt/shared" }],
    ["SHAREDMOUNTPOINT://h1/srv/pool%2Done", { type: "sharedMountPoint", path: "/srv/pool-one" }],
    [
      "nfs://10.0.0.5/export/primary",
      { type: "nfs", path: "/mnt/stratus/p1", nfs: { server: "10.0.0.5", exportPath: "/export/primary" } },
    ],
    [
      "NFS://filer.example.com/vol/a/",
      { type: "nfs", path: "/mnt/stratus/p1", nfs: { server: "filer.example.com", exportPath: "/vol/a" } },
    ],
  ])("reads %s", (url, location) => {
    expect(parsePoolUrl(url, "p1")).toEqual(location);
  });

  it.each([
    ["/mnt/shared", "not of the form scheme://host/path"],
    ["rbd://mon/pool", "the scheme rbd is not supported"],
    ["iscsi://target/iqn/0", "the scheme iscsi is not supported"],
    ["file:///var/lib/stratus", "every host gets its local pool"],
    ["nfs:///export", "the NFS server must be a host name"],
    ["nfs://server:2049/export", "drop the port"],
    ["nfs://me@server/export", "carries no user"],
    ["nfs://server/", "other than /"],
    ["SharedMountPoint:///mnt/../etc", "may not contain .."],
    ["SharedMountPoint:///mnt/with space", "letters, digits"],
    ["SharedMountPoint:///mnt/%zz", "percent-encoding"],
    [`SharedMountPoint:///${"a".repeat(2100)}`, "longer than 2048"],
  ])("refuses %s", (url, why) => {
    const message = refusal(() => parsePoolUrl(url, "p1"));
    expect(message).toContain(why);
    expect(message).toContain("Stratus supports SharedMountPoint:///<path>");
  });
});

describe("storage tags and type", () => {
  it("splits, trims and de-duplicates tags; absent stays absent", () => {
    expect(tagList("tags", " ssd, fast,ssd,,")).toEqual(["ssd", "fast"]);
    expect(tagList("tags", "")).toEqual([]);
    expect(tagList("tags", undefined)).toBeUndefined();
  });

  it("limits tags", () => {
    expect(refusal(() => tagList("tags", "x".repeat(64)))).toContain("at most 63 characters");
    expect(refusal(() => tagList("tags", Array.from({ length: 33 }, (_, i) => `t${i}`).join(",")))).toContain(
      "at most 32",
    );
  });

  it("reads storagetype in any case and refuses anything else", () => {
    expect(storageType("LOCAL")).toBe("local");
    expect(storageType("shared")).toBe("shared");
    expect(storageType(undefined)).toBeUndefined();
    expect(refusal(() => storageType("ceph"))).toBe(
      "Invalid parameter storagetype value=ceph: it is local or shared",
    );
  });
});
