// StoragePools as libvirt pools. An nfs pool is a libvirt netfs pool: its definition is checked
// against libvirt's test driver (which pretends to mount it); this machine's kernel has no NFS
// client, so on the real daemon the same pool is reported not ready with libvirt's own reason,
// and nothing is created in it. A sharedMountPoint path that is not shared is refused.
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { LibvirtConnection } from "../../host-agent/libvirt/connection.ts";
import { LibvirtHypervisor, sharedPoolName } from "../../host-agent/libvirt-hypervisor.ts";

const suffix = randomBytes(3).toString("hex");
const owner = { cluster: `pools-${suffix}`, host: `h-${suffix}` };
const workDir = `/tmp/stratus-pools-${suffix}`;
const nfs = {
  name: `nfs-${suffix}`,
  type: "nfs" as const,
  path: join(workDir, "nfs-mount"),
  nfs: { server: "nfs.example.com", exportPath: "/export/stratus" },
};

afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

describe("storage pools in libvirt", () => {
  it("defines an nfs pool as a netfs pool of the export, mounted at the pool's path (libvirt's test driver)", async () => {
    const libvirt = await LibvirtConnection.open("test:///default");
    try {
      const hv = new LibvirtHypervisor(libvirt, { owner, poolPath: join(workDir, "local") });
      const report = await hv.preparePool(nfs);
      expect(report).toMatchObject({ name: nfs.name, ready: true, path: nfs.path });
      const xml = await libvirt.poolXml(sharedPoolName(owner, nfs.name));
      expect(xml).toContain("<pool type='netfs'>");
      expect(xml).toContain("<host name='nfs.example.com'/>");
      expect(xml).toContain("<dir path='/export/stratus'/>");
      expect(xml).toContain("<format type='nfs'/>");
      expect(xml).toContain(`<path>${nfs.path}</path>`);
      // Disks go in it like in any pool.
      const disk = await hv.ensureDisk({
        pool: nfs.name,
        name: "data-x",
        capacityBytes: 2n ** 30n,
        what: "x",
        grow: false,
      });
      expect(disk.path.startsWith(nfs.path)).toBe(true);
    } finally {
      await libvirt.close();
    }
  });

  it.skipIf(!canRunQemu())(
    "on this machine's real daemon the nfs pool is not ready, with libvirt's reason (the kernel has no NFS client; needs root and libvirt/QEMU)",
    async () => {
      await ensureLibvirtDaemons();
      const libvirt = await LibvirtConnection.open("qemu:///system");
      const hv = new LibvirtHypervisor(libvirt, { owner, poolPath: join(workDir, "local") });
      try {
        const report = await hv.preparePool(nfs);
        expect(report.ready).toBe(false);
        expect(report.message).toMatch(/mount|nfs/i);
        await expect(
          hv.ensureDisk({ pool: nfs.name, name: "data-x", capacityBytes: 2n ** 30n, what: "x", grow: false }),
        ).rejects.toMatchObject({ reason: "PoolNotReachable" });
        // A sharedMountPoint that is a plain local directory would keep disks on this host only.
        await mkdir(join(workDir, "not-shared"), { recursive: true });
        const plain = await hv.preparePool({
          name: `smp-${suffix}`,
          type: "sharedMountPoint",
          path: join(workDir, "not-shared"),
        });
        expect(plain).toMatchObject({
          ready: false,
          message: expect.stringContaining("is not a mount point"),
        });
        await writeFile(join(workDir, "not-shared", ".stratus-shared"), "");
        expect(
          (
            await hv.preparePool({
              name: `smp-${suffix}`,
              type: "sharedMountPoint",
              path: join(workDir, "not-shared"),
            })
          ).ready,
        ).toBe(true);
      } finally {
        for (const name of [nfs.name, `smp-${suffix}`])
          await libvirt.deletePool(sharedPoolName(owner, name)).catch(() => undefined);
        await hv.removePools();
        await libvirt.close();
      }
    },
  );
});
