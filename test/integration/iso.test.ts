// ISOs through the real `cs` client, on real QEMU: an administrator registers the tiny guest as a
// bootable ISO (test/images/build-tiny-iso.sh, served over HTTP); listIsos shows it and
// listTemplates does not; a VM deployed from it boots from the disc onto a blank root disk of the
// disk offering's size; attachIso and detachIso swap the disc of a running guest; what CloudStack
// refuses is refused. Needs root and the libvirt/QEMU Debian packages, xorriso and isolinux.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources } from "../../crds/index.ts";
import { buildTinyDisk } from "../../devcluster/guest-images.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { isoIn } from "../../host-agent/domain-xml.ts";
import { KubeClient } from "../../runtime/client.ts";
import { type Account, adminAndUser, hasCs, cs as runCs, signedRequest } from "./cloudstack-accounts.ts";
import { afterThisFile } from "./file-cleanup.ts";
import { readConsoleUntil } from "./guest-console.ts";
import type { ApiServerProcess, StratusProcess } from "./processes.ts";
import {
  printAgentLogOnFailure,
  startGuestControlPlane,
  startQemuHostAgent,
  stopGuestCloud,
  virsh,
} from "./qemu-agent.ts";
import { createdUid, run, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

type Row = Record<string, unknown>;
const canBuildIso = existsSync("/usr/lib/ISOLINUX/isolinux.bin") && existsSync("/usr/bin/xorriso");

describe.skipIf(!canRunQemu() || !canBuildIso || !hasCs)(
  "ISOs: registered, booted from, swapped in a running guest (needs root, libvirt/QEMU, xorriso, isolinux, python3-cs)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const zone = `iso-${suffix}`;
    const host = `iso-${suffix}`;
    const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
    const workDir = `/var/lib/stratus/iso-${suffix}`;
    const ids = { zone: "", offering: "", disk: "", tinyDisk: "", network: "", iso: "" };
    let client: KubeClient;
    let endpoint: string;
    let admin: Account;
    let user: Account;
    let agent: StratusProcess;
    let operator: StratusProcess;
    let api: ApiServerProcess;
    let isoUrl: string;

    const cs = (account: Account, command: string, args: Record<string, string> = {}) =>
      runCs(endpoint, account, command, args);
    async function refusal(account: Account, params: Record<string, string>) {
      const response = await signedRequest(endpoint, account, params);
      const body = response.body[`${(params.command as string).toLowerCase()}response`] as Row;
      return { status: response.status, errortext: String(body.errortext) };
    }
    const deployParams = (name: string, templateid: string, extra: Record<string, string> = {}) => ({
      serviceofferingid: ids.offering,
      templateid,
      zoneid: ids.zone,
      networkids: ids.network,
      name,
      ...extra,
    });
    const domainXml = (uid: string) => virsh("dumpxml", `stratus-${uid}`);
    const consoleOf = (uid: string) => join(workDir, "console", `${uid}.sock`);

    beforeAll(async () => {
      await ensureLibvirtDaemons();
      await mkdir(workDir, { recursive: true, mode: 0o755 });
      const iso = (await run("bash", ["test/images/build-tiny-iso.sh"])).stdout.trim();
      const server = createServer(async (request, response) => {
        if (request.url === "/tiny.iso") response.end(await readFile(iso));
        else response.writeHead(404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      afterThisFile(() => new Promise<void>((resolve) => server.close(() => resolve())));
      isoUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tiny.iso`;
      // The disk template of the VM a disc is swapped in: QEMU reads it beside the pool.
      const tinyDisk = join(workDir, "tiny.qcow2");
      await copyFile(await buildTinyDisk(), tinyDisk);

      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      const keysNamespace = await useNamespace(controlPlane.kubeConfig, "isokeys");
      ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "iso" }));
      const uidOf = (type: Parameters<typeof createdUid>[1], name: string, spec: object) =>
        createdUid(client, type, name, spec);
      ids.zone = await uidOf(Resources.zones, zone, {});
      ids.offering = await uidOf(Resources.serviceOfferings, `iso-${suffix}`, { cpu: 1, memory: "128Mi" });
      ids.disk = await uidOf(Resources.diskOfferings, `iso-disk-${suffix}`, { size: "1Gi" });
      ids.tinyDisk = await uidOf(Resources.templates, `iso-tiny-${suffix}`, {
        source: { hostPath: tinyDisk },
        format: "qcow2",
      });
      ({ operator, api } = await startGuestControlPlane({
        kubeconfigPath: controlPlane.kubeconfigPath,
        client,
        namespace: keysNamespace,
        workDir,
        name: `iso-${suffix}`,
      }));
      endpoint = api.endpoint;
      // Boot loaders' real-mode code stops on this machine's nested KVM (guest-login.test.ts).
      agent = await startQemuHostAgent({
        kubeconfigPath: controlPlane.kubeconfigPath,
        host,
        zone,
        leaseNamespace: keysNamespace,
        workDir,
        args: ["--accelerator=tcg"],
      });
      const network = await cs(admin, "createNetwork", {
        name: "isonet",
        displaytext: "isonet",
        networkofferingid: "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01",
        zoneid: ids.zone,
        gateway: `${subnet}.1`,
        netmask: "255.255.255.0",
      });
      expect(network.stderr).toBe("");
      ids.network = (network.json.network as Row).id as string;
    }, 600_000);

    printAgentLogOnFailure(() => agent);

    afterAll(async () => {
      for (const vm of ["installer", "swapper"])
        await client?.delete(Resources.virtualMachines, vm, admin?.namespace).catch(() => undefined);
      await waitFor(
        "the test's VMs to be gone",
        async () =>
          (await client.list(Resources.virtualMachines, { namespace: admin.namespace })).items.length === 0,
        { timeoutMs: 120_000 },
      ).catch(() => undefined);
      await stopGuestCloud({ agent, operator, api, client, host, workDir });
    }, 180_000);

    it("registers a bootable ISO that listIsos shows and listTemplates does not, for administrators only", async () => {
      const registered = await cs(admin, "registerIso", {
        name: `tiny-iso-${suffix}`,
        displaytext: "Tiny guest installer",
        url: isoUrl,
        zoneid: ids.zone,
        ostypeid: "Other Linux (64-bit)",
      });
      expect(registered.stderr, registered.stdout).toBe("");
      expect(registered.json).toMatchObject({
        count: 1,
        iso: [{ name: `tiny-iso-${suffix}`, format: "ISO", bootable: true, zoneid: ids.zone }],
      });
      ids.iso = ((registered.json.iso as Row[])[0] as Row).id as string;
      expect((await cs(admin, "listIsos", { id: ids.iso })).json).toMatchObject({ count: 1 });
      expect((await cs(admin, "listIsos", { id: ids.iso, bootable: "false" })).json.count ?? 0).toBe(0);
      const templates = (await cs(admin, "listTemplates", { templatefilter: "all" })).json;
      expect(((templates.template as Row[]) ?? []).map((t) => t.id)).not.toContain(ids.iso);
      expect(
        await refusal(user, {
          command: "registerIso",
          name: "mine",
          displaytext: "mine",
          url: isoUrl,
          zoneid: ids.zone,
        }),
      ).toMatchObject({ status: 531, errortext: expect.stringMatching(/may not register isos/) });
    });

    it("deploys a VM from the ISO: it boots from the disc onto a blank root disk of the offering's size", async () => {
      expect(
        await refusal(admin, { command: "deployVirtualMachine", ...deployParams("nodisk", ids.iso) }),
      ).toMatchObject({
        status: 431,
        errortext: expect.stringMatching(/Installing from ISO requires a disk offering/),
      });
      const deployed = await cs(
        admin,
        "deployVirtualMachine",
        deployParams("installer", ids.iso, { diskofferingid: ids.disk }),
      );
      expect(deployed.stderr, deployed.stdout).toBe("");
      const vm = deployed.json.virtualmachine as Row;
      expect(vm).toMatchObject({ state: "Running", isoid: ids.iso, isoname: `tiny-iso-${suffix}` });
      const roots = (await cs(admin, "listVolumes", { type: "ROOT", virtualmachineid: vm.id as string }))
        .json;
      expect(roots).toMatchObject({ count: 1, volume: [{ size: 2 ** 30 }] });
      // The blank 1 GiB disk cannot boot: the guest that reports it ran from the disc.
      await readConsoleUntil(
        consoleOf(vm.id as string),
        /stratus-guest: disk vda serial=root sectors=2097152/,
        180_000,
      );
      const xml = await domainXml(vm.id as string);
      expect(isoIn(xml)).toBe(join(workDir, "cache", `${await templateUid(`tiny-iso-${suffix}`)}.raw`));
      expect(xml).toMatch(/<target dev='hdd' bus='ide'\/>[\s\S]*?<boot order='1'\/>/);
    }, 600_000);

    it("swaps the disc of a running guest with attachIso and detachIso, and keeps an ISO in use", async () => {
      const deployed = await cs(admin, "deployVirtualMachine", deployParams("swapper", ids.tinyDisk));
      expect(deployed.stderr, deployed.stdout).toBe("");
      const vm = (deployed.json.virtualmachine as Row).id as string;
      expect(isoIn(await domainXml(vm))).toBeUndefined();
      expect(
        await refusal(admin, { command: "attachIso", id: ids.tinyDisk, virtualmachineid: vm }),
      ).toMatchObject({ status: 431, errortext: expect.stringMatching(/is a disk image, not an ISO/) });
      const attached = await cs(admin, "attachIso", { id: ids.iso, virtualmachineid: vm });
      expect(attached.stderr, attached.stdout).toBe("");
      expect(attached.json.virtualmachine).toMatchObject({ state: "Running", isoid: ids.iso });
      expect(isoIn(await domainXml(vm))).toMatch(/\.raw$/);
      expect(await refusal(admin, { command: "attachIso", id: ids.iso, virtualmachineid: vm })).toMatchObject(
        {
          status: 431,
          errortext: expect.stringMatching(/already has ISO .* attached/),
        },
      );
      expect(await refusal(admin, { command: "deleteIso", id: ids.iso })).toMatchObject({
        status: 431,
        errortext: expect.stringMatching(/are using it/),
      });
      const detached = await cs(admin, "detachIso", { virtualmachineid: vm });
      expect(detached.stderr, detached.stdout).toBe("");
      expect((detached.json.virtualmachine as Row).isoid).toBeUndefined();
      expect(isoIn(await domainXml(vm))).toBeUndefined();
      expect((await virsh("domstate", `stratus-${vm}`)).trim()).toBe("running");
    }, 600_000);

    it("fails attachIso with the host's reason when the disc cannot be had, and detaches it again", async () => {
      const vm = (await vmNamed("swapper")).id as string;
      const wrong = `{SHA-256}${"0".repeat(64)}`;
      const registered = await cs(admin, "registerIso", {
        name: `bad-iso-${suffix}`,
        displaytext: "checksum that does not match",
        url: isoUrl,
        zoneid: ids.zone,
        checksum: wrong,
      });
      expect(registered.stderr, registered.stdout).toBe("");
      const bad = ((registered.json.iso as Row[])[0] as Row).id as string;
      const attached = await cs(admin, "attachIso", { id: bad, virtualmachineid: vm });
      expect(attached.stdout).toMatch(/checksum/i);
      expect(attached.stderr).toMatch(/Job failure/);
      expect(isoIn(await domainXml(vm))).toBeUndefined();
      expect((await cs(admin, "detachIso", { virtualmachineid: vm })).stderr).toBe("");
      expect((await virsh("domstate", `stratus-${vm}`)).trim()).toBe("running");
    }, 300_000);

    const vmNamed = async (name: string) =>
      ((await cs(admin, "listVirtualMachines", { name })).json.virtualmachine as Row[])[0] as Row;

    async function templateUid(name: string): Promise<string> {
      return (await client.get(Resources.templates, name)).metadata.uid as string;
    }
  },
);
