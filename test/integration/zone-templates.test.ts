// A URL template is downloaded once per zone onto the zone's secondary storage, as CloudStack's
// storage VM does: the operator (storage chooses the downloading host) and two host agents on
// libvirt's test driver, a local HTTP server that counts requests. Both hosts' VMs start from the
// one download; a VM waits, saying so, while the image is not there yet; a wrong checksum is an
// Error with a clear message and no file; deleting the template removes its file from secondary
// storage and the hosts' caches once no VM uses it.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TEMPLATE_IMAGES_FINALIZER } from "../../crds/finalizers.ts";
import { Resources, type Template, type VirtualMachine } from "../../crds/index.ts";
import type { ZoneImage } from "../../crds/template-images.ts";
import { KubeClient } from "../../runtime/client.ts";
import { qcow2Header } from "../fixtures/qcow2.ts";
import { logsOnFailure, type SimulatedAgents, type StratusProcess, startZoneFabric } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `zt-${suffix}`;
const HOSTS = [`zt-h1-${suffix}`, `zt-h2-${suffix}`];
const OFFERING = `zt-small-${suffix}`;
const IMAGE = qcow2Header(2n ** 30n);
const CHECKSUM = `sha256:${createHash("sha256").update(IMAGE).digest("hex")}`;

describe("URL templates downloaded once per zone", () => {
  let client: KubeClient;
  let namespace: string;
  let workDir: string;
  let secondary: string;
  let base: string;
  let operator: StratusProcess;
  let simulated: SimulatedAgents;
  let closeServer: (() => Promise<void>) | undefined;
  /** Requests per path at the image server. */
  const requests = new Map<string, number>();
  /** Responses of /slow.qcow2, held until the test lets them finish. */
  const held: ServerResponse[] = [];
  logsOnFailure(() => [operator, ...(simulated?.agents.values() ?? [])]);

  const template = (name: string) => client.get<Template>(Resources.templates, name);
  const vm = (name: string) => client.get<VirtualMachine>(Resources.virtualMachines, name, namespace);
  const zoneEntry = async (name: string) =>
    (await template(name)).status?.zones?.find((z) => z.zone === ZONE);
  const filesOf = (dir: string, uid: string) =>
    existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(`${uid}.`)) : [];
  const cacheOf = (host: string) => join(workDir, "cache", host);
  async function createTemplate(name: string, path: string, checksum = CHECKSUM) {
    const made = await client.create<Template>(Resources.templates, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Template",
      metadata: { name },
      spec: { source: { url: `${base}${path}` }, checksum },
    });
    return made.metadata.uid as string;
  }
  const createVm = (name: string, templateName: string, host: string) =>
    client.create(Resources.virtualMachines, {
      metadata: { name, namespace },
      spec: { zone: ZONE, serviceOffering: OFFERING, template: templateName, placement: { host } },
    });
  const zoneState = (name: string, state: ZoneImage["state"]) =>
    waitFor(`template ${name} ${state} in zone ${ZONE}`, async () => {
      const entry = await zoneEntry(name);
      return entry?.state === state ? entry : undefined;
    });
  const readyReason = async (name: string) =>
    (await vm(name)).status?.conditions?.find((c) => c.type === "Ready");

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "zt");
    workDir = await mkdtemp(join(tmpdir(), "stratus-zt-"));
    secondary = join(workDir, "secondary");
    const server: Server = createServer((request, response) => {
      const path = request.url ?? "";
      requests.set(path, (requests.get(path) ?? 0) + 1);
      if (path === "/tiny.qcow2" || path === "/wrong-sum.qcow2") response.end(IMAGE);
      else if (path === "/slow.qcow2") {
        response.writeHead(200, { "content-length": String(IMAGE.length) });
        response.write(IMAGE.subarray(0, 64));
        held.push(response);
      } else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closeServer = () => {
      for (const response of held) response.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    };
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    ({ operator, simulated } = await startZoneFabric({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      namespace,
      identity: `zt-operator-${suffix}`,
      zone: ZONE,
      secondaryStorage: secondary,
      offering: OFFERING,
      workDir,
      hosts: HOSTS,
    }));
  });

  afterAll(async () => {
    await closeServer?.();
    await simulated?.stopAll();
    await operator?.stop("SIGKILL");
    await client?.close();
    await rm(workDir, { recursive: true, force: true });
  });

  it("downloads the image once for the zone, verified, and both hosts' VMs start from it", async () => {
    const uid = await createTemplate(`zt-tiny-${suffix}`, "/tiny.qcow2");
    expect((await template(`zt-tiny-${suffix}`)).metadata.finalizers).toEqual([TEMPLATE_IMAGES_FINALIZER]);
    const ready = await zoneState(`zt-tiny-${suffix}`, "Ready");
    expect(ready).toMatchObject({ host: expect.any(String), sha256: CHECKSUM.slice(7), bytes: IMAGE.length });
    expect(HOSTS).toContain(ready.host);
    // Under its final name only, with the bytes served: no half file beside it.
    expect(filesOf(join(secondary, "templates"), uid)).toEqual([`${uid}.qcow2`]);
    expect(new Uint8Array(await readFile(join(secondary, "templates", `${uid}.qcow2`)))).toEqual(IMAGE);

    await Promise.all(HOSTS.map((host, i) => createVm(`zt-vm-${i}`, `zt-tiny-${suffix}`, host)));
    for (const [i, host] of HOSTS.entries()) {
      const running = await waitFor(`zt-vm-${i} Running`, async () => {
        const current = await vm(`zt-vm-${i}`);
        return current.status?.state === "Running" ? current : undefined;
      });
      expect(running.status?.host).toBe(host);
      // Each host copied the zone's image into its own cache.
      expect(new Uint8Array(await readFile(join(cacheOf(host), `${uid}.qcow2`)))).toEqual(IMAGE);
    }
    expect(requests.get("/tiny.qcow2")).toBe(1);
  });

  it("keeps a VM Pending, saying it waits for the template, until the zone has the image", async () => {
    await createTemplate(`zt-slow-${suffix}`, "/slow.qcow2");
    await zoneState(`zt-slow-${suffix}`, "Downloading");
    await createVm("zt-waiting", `zt-slow-${suffix}`, HOSTS[1] as string);
    const waiting = await waitFor("zt-waiting to say it waits", async () => {
      const ready = await readyReason("zt-waiting");
      return ready?.reason === "WaitingForTemplate" ? ready : undefined;
    });
    expect(waiting.message).toMatch(
      new RegExp(
        `^Template zt-slow-${suffix} is being downloaded to zone ${ZONE}'s secondary storage by host `,
      ),
    );
    expect((await vm("zt-waiting")).status?.state).toBe("Pending");
    for (const response of held.splice(0)) response.end(IMAGE.subarray(64));
    await zoneState(`zt-slow-${suffix}`, "Ready");
    await waitFor("zt-waiting Running", async () => (await vm("zt-waiting")).status?.state === "Running");
    expect(requests.get("/slow.qcow2")).toBe(1);
  });

  it("says Error with the reason when the checksum is wrong, keeps no file, and the VM says why it cannot start", async () => {
    const wrong = `sha256:${"0".repeat(64)}`;
    const uid = await createTemplate(`zt-wrong-${suffix}`, "/wrong-sum.qcow2", wrong);
    const failed = await zoneState(`zt-wrong-${suffix}`, "Error");
    expect(failed.reason).toBe("ChecksumMismatch");
    expect(failed.message).toBe(
      `${base}/wrong-sum.qcow2 has checksum ${CHECKSUM}, the template expects ${wrong} (host ${failed.host})`,
    );
    expect(filesOf(join(secondary, "templates"), uid)).toEqual([]);
    await createVm("zt-doomed", `zt-wrong-${suffix}`, HOSTS[0] as string);
    const ready = await waitFor("zt-doomed to say why", async () => {
      const condition = await readyReason("zt-doomed");
      return condition?.reason === "TemplateDownloadFailed" ? condition : undefined;
    });
    expect(ready.message).toContain("has checksum");
    expect(requests.get("/wrong-sum.qcow2")).toBe(1); // a wrong image is not fetched again
    await client.delete(Resources.virtualMachines, "zt-doomed", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "zt-doomed", namespace);
  });

  it("removes a deleted template's file from secondary storage and the caches only once no VM uses it", async () => {
    const name = `zt-tiny-${suffix}`;
    const uid = (await template(name)).metadata.uid as string;
    await client.delete(Resources.templates, name);
    const blocked = await waitFor("the deletion to wait for the VMs", async () => {
      const inUse = (await template(name)).status?.conditions?.find((c) => c.type === "InUse");
      return inUse?.reason === "DeletionBlocked" ? inUse : undefined;
    });
    expect(blocked.message).toContain(`${namespace}/zt-vm-0`);
    expect(filesOf(join(secondary, "templates"), uid)).toEqual([`${uid}.qcow2`]);

    for (const i of [0, 1]) await client.delete(Resources.virtualMachines, `zt-vm-${i}`, namespace);
    await waitUntilGone(client, Resources.templates, name);
    expect(filesOf(join(secondary, "templates"), uid)).toEqual([]);
    for (const host of HOSTS)
      await waitFor(`${host}'s cached copy gone`, () => filesOf(cacheOf(host), uid).length === 0);
    // The other templates' files stay.
    const slow = (await template(`zt-slow-${suffix}`)).metadata.uid as string;
    expect(filesOf(join(secondary, "templates"), slow)).toEqual([`${slow}.qcow2`]);

    // A template whose download failed has no file anywhere: it goes at once.
    await client.delete(Resources.templates, `zt-wrong-${suffix}`);
    await waitUntilGone(client, Resources.templates, `zt-wrong-${suffix}`);
    // One on every host already has no copies to remove: no finalizer.
    const local = await client.create<Template>(Resources.templates, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "Template",
      metadata: { name: `zt-local-${suffix}` },
      spec: { source: { hostPath: "/var/lib/images/t.qcow2" } },
    });
    expect(local.metadata.finalizers ?? []).toEqual([]);
    await client.delete(Resources.templates, `zt-local-${suffix}`);
  });
});
