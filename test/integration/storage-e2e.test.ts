// Storage that never loses data, on real QEMU: two host agents on this machine's libvirt daemon,
// each with a local pool of its own, and a zone whose secondary storage and shared pool are
// directories both hosts see (as NFS mounts would be). The tiny guest writes a word at the start
// of its root and data disks with dd; maintenance moves it to the other host and the words read
// back there; a disk moves to the pool its Volume asks for, and with its stopped VM pinned to the
// other host; a template made from a stopped VM's root disk deploys a VM there with the same bytes;
// a snapshot taken while it runs brings a word back after it was overwritten.
// Needs root and the libvirt/QEMU Debian packages (.ci/run installs them).

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import {
  localPoolName,
  REVERT_ANNOTATION,
  Resources,
  type Template,
  type VolumeSnapshot,
} from "../../crds/index.ts";
import { canRunQemu } from "../../devcluster/libvirt.ts";
import { sha256File } from "../../host-agent/disk-files.ts";
import { readConsoleUntil, typeOnConsole } from "./guest-console.ts";
import { qemuStorageRig } from "./qemu-storage-rig.ts";
import { waitFor } from "./support.ts";

const run = promisify(execFile);

describe.skipIf(!canRunQemu())(
  "volumes that move and snapshots, on real QEMU (needs root and libvirt/QEMU)",
  () => {
    const rig = qemuStorageRig("mv");
    const { suffix, zone, workDir } = rig;

    it("maintenance copies a VM's local root and data disks to the other host, verified, and removes the old copies", async () => {
      const { client, namespace } = rig;
      await client.create(Resources.volumes, {
        metadata: { name: "mover-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      const vm = await rig.bootAndWrite("mover", "mover-data", `local${suffix}`);
      const from = vm.status?.host as string;
      const to = rig.other(from);
      const before = await rig.getVolume("mover-data");
      expect(before.status).toMatchObject({ pool: localPoolName(from), poolType: "local", host: from });
      const oldDisk = before.status?.path as string;
      expect(existsSync(oldDisk)).toBe(true);

      await rig.setMaintenance(from, true);
      const moved = await rig.runningOn("mover", to);
      await rig.readsBack(moved, to, `local${suffix}`);
      for (const name of ["mover-data", "mover-root"]) {
        const volume = await rig.getVolume(name);
        expect(volume.status).toMatchObject({ pool: localPoolName(to), host: to });
        expect(volume.status?.path?.startsWith(join(workDir, to, "pool"))).toBe(true);
        expect(volume.status?.transfer?.exported).toBeUndefined();
      }
      // The old copies went only after the new ones were verified; the staged copies are gone too.
      expect(existsSync(oldDisk)).toBe(false);
      await waitFor(
        "the staged copies removed",
        () => !existsSync(join(workDir, "secondary", "transfers", `${before.metadata.uid}.qcow2`)),
      );
      await rig.hostState(from, "Maintenance");
      await rig.setMaintenance(from, false);
      await rig.hostState(from, "Enabled");
    }, 300_000);

    it("a VM whose disks cannot go anywhere stays where it is with its data, and maintenance says why", async () => {
      const { client, namespace } = rig;
      await client.create(Resources.volumes, {
        metadata: { name: "stuck-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      const vm = await rig.bootAndWrite("stuck", "stuck-data", `stay${suffix}`);
      const from = vm.status?.host as string;
      const to = rig.other(from);
      // The only pool the disks could go to takes no new volumes.
      await client.mergePatch(Resources.storagePools, localPoolName(to), undefined, {
        spec: { maintenance: true },
      });
      await rig.setMaintenance(from, true);
      const host = await rig.hostState(from, "ErrorInMaintenance");
      expect(JSON.stringify(host.status?.conditions)).toMatch(/stuck/);
      const stuck = await rig.getVm("stuck");
      expect(stuck.status?.host).toBe(from);
      expect(stuck.status?.conditions?.find((c) => c.type === "Scheduled")?.message).toMatch(/maintenance/);
      expect((await rig.getVolume("stuck-data")).status).toMatchObject({
        pool: localPoolName(from),
        host: from,
      });
      // Maintenance called off: the VM runs again where it was, with its words.
      await rig.setMaintenance(from, false);
      const back = await rig.runningOn("stuck", from);
      await rig.readsBack(back, from, `stay${suffix}`);
      await client.mergePatch(Resources.storagePools, localPoolName(to), undefined, {
        spec: { maintenance: false },
      });
      await client.delete(Resources.virtualMachines, "stuck", namespace);
    }, 300_000);

    it("on a sharedMountPoint pool the VM moves and no byte is copied: the same files serve it on the other host", async () => {
      const { client, namespace } = rig;
      await rig.sharedPoolReady();
      await client.create(Resources.volumes, {
        metadata: { name: "sharer-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      const vm = await rig.bootAndWrite("sharer", "sharer-data", `shared${suffix}`);
      const from = vm.status?.host as string;
      const files = await Promise.all(
        ["sharer-data", "sharer-root"].map(async (name) => {
          const volume = await rig.getVolume(name);
          expect(volume.status).toMatchObject({ pool: `shared-${suffix}`, poolType: "sharedMountPoint" });
          return {
            name,
            path: volume.status?.path as string,
            inode: (await stat(volume.status?.path as string)).ino,
          };
        }),
      );
      await rig.setMaintenance(from, true);
      const moved = await rig.runningOn("sharer", rig.other(from));
      await rig.readsBack(moved, rig.other(from), `shared${suffix}`);
      for (const file of files) {
        const volume = await rig.getVolume(file.name);
        expect(volume.status).toMatchObject({
          pool: `shared-${suffix}`,
          host: rig.other(from),
          path: file.path,
        });
        expect((await stat(file.path)).ino).toBe(file.inode);
      }
      await rig.setMaintenance(from, false);
    }, 300_000);

    it("moves a stopped VM's data volume on request (spec.pool), then the VM pinned to the other host with its disk: the words read back", async () => {
      const { client, namespace } = rig;
      await client.create(Resources.volumes, {
        metadata: { name: "migrant-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      await rig.sharedPoolReady();
      const vm = await rig.bootAndWrite("migrant", "migrant-data", `mig${suffix}`);
      const from = vm.status?.host as string;
      const to = rig.other(from);
      const before = await rig.getVolume("migrant-data");
      await client.mergePatch(Resources.virtualMachines, "migrant", namespace, {
        spec: { runStrategy: "Halted" },
      });
      await waitFor("the VM stopped", async () => (await rig.getVm("migrant")).status?.state === "Stopped", {
        timeoutMs: 90_000,
      });
      const settled = (pool: string, host: string) =>
        waitFor(
          `migrant-data in pool ${pool} on ${host}`,
          async () => {
            const v = await rig.getVolume("migrant-data");
            return v.status?.pool === pool && v.status.host === host && !v.status.transfer ? v : undefined;
          },
          { timeoutMs: 180_000, intervalMs: 500 },
        );
      // 1. To another pool of the same host: copied through secondary storage, verified, the old file gone.
      const firstPool =
        before.status?.pool === localPoolName(from) ? `shared-${suffix}` : localPoolName(from);
      await client.mergePatch(Resources.volumes, "migrant-data", namespace, { spec: { pool: firstPool } });
      const first = await settled(firstPool, from);
      expect(first.status?.path).not.toBe(before.status?.path);
      expect(existsSync(before.status?.path as string)).toBe(false);
      // 2. The VM pinned to the other host and the disk asked into that host's local pool: they go together.
      await client.mergePatch(Resources.volumes, "migrant-data", namespace, {
        spec: { pool: localPoolName(to) },
      });
      await client.mergePatch(Resources.virtualMachines, "migrant", namespace, {
        spec: { placement: { host: to } },
      });
      const second = await settled(localPoolName(to), to);
      expect(second.status?.path?.startsWith(join(workDir, to, "pool"))).toBe(true);
      expect(existsSync(first.status?.path as string)).toBe(false);
      await client.mergePatch(Resources.virtualMachines, "migrant", namespace, {
        spec: { runStrategy: "Always" },
      });
      await rig.readsBack(await rig.runningOn("migrant", to), to, `mig${suffix}`);
    }, 400_000);

    it("a template made from the stopped VM's root volume deploys a VM on the other host with the same bytes", async () => {
      const { client, namespace } = rig;
      await client.mergePatch(Resources.virtualMachines, "migrant", namespace, {
        spec: { runStrategy: "Halted" },
      });
      await waitFor("the VM stopped", async () => (await rig.getVm("migrant")).status?.state === "Stopped", {
        timeoutMs: 90_000,
      });
      const root = await rig.getVolume("migrant-root");
      await client.create(Resources.templates, {
        metadata: { name: `golden-${suffix}` },
        spec: { source: { volume: { namespace, name: "migrant-root" } } },
      });
      let seen: Template | undefined;
      const template = await waitFor("the template's image", async () => {
        seen = await client.get<Template>(Resources.templates, `golden-${suffix}`);
        return seen.status?.image ? seen : undefined;
      }).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}; it says ${JSON.stringify(seen?.status)}`);
      });
      const image = template.status?.image as NonNullable<NonNullable<Template["status"]>["image"]>;
      expect(image.host).toBe(root.status?.host);
      expect(image.path.startsWith(join(workDir, "secondary", "templates"))).toBe(true);
      expect(await sha256File(image.path)).toBe(image.sha256);
      const elsewhere = rig.other(root.status?.host as string);
      await client.create(Resources.virtualMachines, {
        metadata: { name: "cloned", namespace },
        spec: {
          zone,
          serviceOffering: `mv-${suffix}`,
          template: `golden-${suffix}`,
          placement: { host: elsewhere },
        },
      });
      await rig.runningOn("cloned", elsewhere);
      // The other host copied the image into its cache and checked it (the tiny guest boots a kernel
      // directly, so its disk holds no boot loader: the bytes are read from the new root disk).
      const cached = join(workDir, elsewhere, "cache", `${template.metadata.uid}.qcow2`);
      expect(await sha256File(cached)).toBe(image.sha256);
      const clonedRoot = await rig.getVolume("cloned-root");
      expect(clonedRoot.status?.host).toBe(elsewhere);
      const raw = join(workDir, "cloned-root.raw");
      await run("qemu-img", ["convert", "-U", "-O", "raw", clonedRoot.status?.path as string, raw]);
      const head = await readFile(raw).then((b) => b.subarray(0, 64).toString("latin1"));
      expect(head.startsWith(`mig${suffix}-vda`)).toBe(true);
      // Done with both: their guests would only slow the next test down.
      for (const vm of ["cloned", "migrant"]) await client.delete(Resources.virtualMachines, vm, namespace);
    }, 400_000);

    it("a snapshot of a running guest's disk brings its word back after a revert, and a new volume made from it holds it", async () => {
      const { client, namespace } = rig;
      await client.create(Resources.volumes, {
        metadata: { name: "snap-data", namespace },
        spec: { zone, size: "1Gi" },
      });
      const vm = await rig.bootAndWrite("snapper", "snap-data", `snap${suffix}`);
      const host = vm.status?.host as string;
      await client.create(Resources.volumeSnapshots, {
        metadata: { name: "snap-1", namespace },
        spec: { volume: "snap-data" },
      });
      let seen: VolumeSnapshot | undefined;
      const snapshot = await waitFor("the snapshot Ready", async () => {
        seen = await client.get<VolumeSnapshot>(Resources.volumeSnapshots, "snap-1", namespace);
        return seen.status?.phase === "Ready" ? seen : undefined;
      }).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}; it says ${JSON.stringify(seen?.status)}`);
      });
      // Taken while the guest ran: it was paused for the copy only, and the file is what the status says.
      expect(snapshot.status?.host).toBe(host);
      expect(snapshot.status?.pausedMilliseconds).toBeGreaterThanOrEqual(0);
      expect(snapshot.status?.path?.startsWith(join(workDir, "secondary", "snapshots"))).toBe(true);
      expect(await sha256File(snapshot.status?.path as string)).toBe(snapshot.status?.sha256);
      // Resumed after the copy (while paused its agent may report it Stopped for a moment).
      await rig.runningOn("snapper", host, 60_000);

      // The guest overwrites its word; revert needs the VM stopped, as in CloudStack.
      const socket = rig.consoleOf(host, vm);
      await typeOnConsole(socket, "stratus-write vdb changed");
      await readConsoleUntil(socket, /stratus-guest: disk vdb serial=\S* sectors=\d+ head=changed/);
      await client.mergePatch(Resources.virtualMachines, "snapper", namespace, {
        spec: { runStrategy: "Halted" },
      });
      await waitFor("the VM stopped", async () => (await rig.getVm("snapper")).status?.state === "Stopped", {
        timeoutMs: 90_000,
      });
      await client.mergePatch(Resources.volumes, "snap-data", namespace, {
        metadata: { annotations: { [REVERT_ANNOTATION]: "snap-1/first" } },
      });
      await waitFor(
        "the revert done",
        async () => (await rig.getVolume("snap-data")).status?.revertedTo === "snap-1/first",
        {
          timeoutMs: 90_000,
        },
      );
      await client.mergePatch(Resources.virtualMachines, "snapper", namespace, {
        spec: { runStrategy: "Always" },
      });
      await rig.readsBack(await rig.runningOn("snapper", host), host, `snap${suffix}`, ["vdb"]);

      // A new volume from the snapshot, on another VM: the same word.
      await client.create(Resources.volumes, {
        metadata: { name: "restored-data", namespace },
        spec: { zone, size: "1Gi", source: { snapshot: "snap-1" } },
      });
      await client.create(Resources.virtualMachines, {
        metadata: { name: "restored", namespace },
        spec: {
          zone,
          serviceOffering: `mv-${suffix}`,
          template: `tiny-${suffix}`,
          dataVolumes: [{ name: "data", volume: "restored-data" }],
        },
      });
      const restored = await waitFor(
        "the restored VM Running",
        async () => {
          const v = await rig.getVm("restored");
          return v.status?.state === "Running" ? v : undefined;
        },
        { timeoutMs: 180_000 },
      );
      const restoredSocket = rig.consoleOf(restored.status?.host as string, restored);
      expect(
        await readConsoleUntil(
          restoredSocket,
          new RegExp(`stratus-guest: disk vda serial=data sectors=\\d+ head=snap${suffix}-vdb`),
        ),
      ).toBeTruthy();
      // Deleting the snapshot removes its file from secondary storage.
      await client.delete(Resources.volumeSnapshots, "snap-1", namespace);
      await waitFor("the snapshot file gone", () => !existsSync(snapshot.status?.path as string));
    }, 400_000);
  },
);
