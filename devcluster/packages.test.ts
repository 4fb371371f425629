import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { packageNames } from "./packages.ts";

describe("the Debian package list", () => {
  it("reads names, leaving comments and blank lines aside", () => {
    expect(packageNames("# head\nlibvirt0\n\n  cpio  # the initramfs\n#x\ncs\n")).toEqual([
      "libvirt0",
      "cpio",
      "cs",
    ]);
  });

  it("names what the local cloud runs on", () => {
    const names = packageNames(readFileSync(new URL("debian-packages", import.meta.url), "utf8"));
    expect(names).toEqual(
      expect.arrayContaining(["libvirt0", "qemu-system-x86", "dnsmasq-base", "busybox-static", "cs"]),
    );
  });
});
