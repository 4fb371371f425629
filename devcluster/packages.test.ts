import { readFileSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PACKAGE_LISTS, packageNames, readPackageLists } from "./packages.ts";

describe("the Debian package lists", () => {
  it("reads names, leaving comments and blank lines aside", () => {
    expect(packageNames("# head\nlibvirt0\n\n  cpio  # the initramfs\n#x\ncs\n")).toEqual([
      "libvirt0",
      "cpio",
      "cs",
    ]);
  });

  it("names what the local cloud runs on", () => {
    const names = packageNames(readFileSync(PACKAGE_LISTS.cloud, "utf8"));
    expect(names).toEqual(
      expect.arrayContaining(["libvirt0", "qemu-system-x86", "dnsmasq-base", "busybox-static", "cs"]),
    );
  });

  it("reads several lists as one, each name once, in order", async () => {
    const dir = await mkdtemp(join(tmpdir(), "stratus-packages-"));
    await writeFile(join(dir, "a"), "git\nlua5.4 # tests\n");
    await writeFile(join(dir, "b"), "# more\nlua5.4\ncpio\n");
    expect(await readPackageLists([join(dir, "a"), join(dir, "b")])).toEqual(["git", "lua5.4", "cpio"]);
  });

  it("gives `stratus test` what the tests would otherwise skip for (a real CloudStack client, Lua)", async () => {
    const names = await readPackageLists([PACKAGE_LISTS.cloud, PACKAGE_LISTS.tests]);
    expect(names).toEqual(expect.arrayContaining(["libvirt0", "python3-libcloud", "python3-cs", "lua5.4"]));
  });
});
