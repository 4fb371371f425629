import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { enableDiskLeases } from "./libvirt.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function conf(text: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "stratus-qemu-conf-"));
  dirs.push(dir);
  await writeFile(join(dir, "qemu.conf"), text);
  return join(dir, "qemu.conf");
}

describe("enableDiskLeases", () => {
  it("turns virtlockd's leases on once, under Debian's commented default", async () => {
    const path = await conf('# the default\n#lock_manager = "lockd"\nuser = "root"\n');
    expect(await enableDiskLeases(path)).toBe(true);
    expect(await enableDiskLeases(path)).toBe(false);
    const text = await readFile(path, "utf8");
    expect(text.match(/^lock_manager = "lockd"$/gm)).toHaveLength(1);
    expect(text).toContain('user = "root"');
  });

  it("leaves a lock manager its administrator chose", async () => {
    const path = await conf('lock_manager = "sanlock"\n');
    const said: string[] = [];
    expect(await enableDiskLeases(path, (m) => said.push(m))).toBe(false);
    expect(await readFile(path, "utf8")).toBe('lock_manager = "sanlock"\n');
    expect(said.join()).toContain("sanlock");
  });
});
