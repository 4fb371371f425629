// registerTemplate, updateTemplate and deleteTemplate of URL templates through the real `cs`
// client: the operator, the API component and a simulated host agent whose zone has secondary
// storage, and a local HTTP server that counts requests. A registered template becomes ready in
// listTemplates once the agent verified its download, is updated, and deleting it removes its file;
// each bad input is CloudStack's error with no Template (and no request) left behind, and a wrong
// checksum shows in listTemplates as isready=false with the mismatch as status.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Resources, type Template, type VirtualMachine } from "../../crds/index.ts";
import { KubeClient } from "../../runtime/client.ts";
import { qcow2Header } from "../fixtures/qcow2.ts";
import {
  type Account,
  adminAndUser,
  hasCs,
  jobOf,
  cs as runCs,
  signedRequest,
} from "./cloudstack-accounts.ts";
import {
  logsOnFailure,
  type SimulatedAgents,
  type StratusProcess,
  startApiServer,
  startZoneFabric,
} from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `rt-${suffix}`;
const HOST = `rt-h1-${suffix}`;
const OFFERING = `rt-small-${suffix}`;
const IMAGE = qcow2Header(2n ** 30n);
const SHA256 = createHash("sha256").update(IMAGE).digest("hex");

type Row = Record<string, unknown>;

describe.skipIf(!hasCs)("registerTemplate, updateTemplate, deleteTemplate (needs python3-cs)", () => {
  let client: KubeClient;
  let endpoint: string;
  let admin: Account;
  let user: Account;
  let zoneId: string;
  let workDir: string;
  let namespace: string;
  let secondary: string;
  let base: string;
  let api: StratusProcess;
  let operator: StratusProcess;
  let simulated: SimulatedAgents;
  let closeServer: (() => Promise<void>) | undefined;
  /** Requests per path at the image server. */
  const requests = new Map<string, number>();
  logsOnFailure(() => [api, operator, ...(simulated?.agents.values() ?? [])]);

  const cs = (command: string, args: Record<string, string> = {}) => runCs(endpoint, admin, command, args);
  const registration = (name: string, extra: Record<string, string> = {}) => ({
    command: "registerTemplate",
    name,
    displaytext: `Template ${name}`,
    url: `${base}/tiny.qcow2`,
    format: "QCOW2",
    hypervisor: "KVM",
    zoneid: zoneId,
    ...extra,
  });
  async function refused(account: Account, params: Record<string, string>) {
    const response = await signedRequest(endpoint, account, params);
    const body = response.body[`${(params.command as string).toLowerCase()}response`] ?? {};
    return { status: response.status, errortext: String(body.errortext) };
  }
  const listed = async (id: string) =>
    (((await cs("listTemplates", { templatefilter: "executable", id })).json.template ?? []) as Row[])[0];
  const secondaryFiles = (uid: string) => {
    const dir = join(secondary, "templates");
    return existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(uid)) : [];
  };
  const noTemplate = async (name: string) =>
    expect(await client.get<Template>(Resources.templates, name).catch(() => undefined)).toBeUndefined();

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "rt-keys");
    namespace = await useNamespace(controlPlane.kubeConfig, "rt");
    ({ admin, user } = await adminAndUser(client, { keysNamespace, suffix, prefix: "rt" }));
    workDir = await mkdtemp(join(tmpdir(), "stratus-rt-"));
    secondary = join(workDir, "secondary");
    const server: Server = createServer((request, response) => {
      const path = request.url ?? "";
      requests.set(path, (requests.get(path) ?? 0) + 1);
      if (path === "/tiny.qcow2") response.end(IMAGE);
      else response.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closeServer = () => new Promise<void>((resolve) => server.close(() => resolve()));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    ({
      operator,
      simulated,
      zoneUid: zoneId,
    } = await startZoneFabric({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      namespace,
      identity: `rt-operator-${suffix}`,
      zone: ZONE,
      secondaryStorage: secondary,
      offering: OFFERING,
      workDir,
      hosts: [HOST],
    }));
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `rt-api-${suffix}`,
      keysNamespace,
    });
    api = started.process;
    endpoint = started.endpoint;
  });

  afterAll(async () => {
    await closeServer?.();
    await api?.stop("SIGKILL");
    await simulated?.stopAll();
    await operator?.stop("SIGKILL");
    await client?.delete(Resources.serviceOfferings, OFFERING).catch(() => undefined);
    await client?.delete(Resources.zones, ZONE).catch(() => undefined);
    await client?.close();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  it("registers a URL template that becomes ready, updates it, and deletes it with its file", async () => {
    const name = `rt-tiny-${suffix}`;
    const { command: _, ...args } = registration(name, {
      checksum: `{SHA-256}${SHA256}`,
      ostypeid: "Other Linux (64-bit)",
      passwordenabled: "true",
      ispublic: "true",
      isfeatured: "true",
    });
    const registered = await cs("registerTemplate", args);
    expect(registered.ok).toBe(true);
    const [entry] = registered.json.template as Row[];
    expect(registered.json.count).toBe(1);
    expect(entry).toMatchObject({
      name,
      displaytext: `Template ${name}`,
      zoneid: zoneId,
      format: "QCOW2",
      hypervisor: "KVM",
      passwordenabled: true,
      ispublic: true,
      isfeatured: true,
      isextractable: false,
    });
    const id = entry?.id as string;
    const ready = await waitFor("template ready in listTemplates", async () => {
      const row = await listed(id);
      return row?.isready === true ? row : undefined;
    });
    expect(ready).toMatchObject({ status: "Download Complete", size: IMAGE.length, zoneid: zoneId });
    expect(secondaryFiles(id)).toEqual([`${id}.qcow2`]);

    const updated = await cs("updateTemplate", {
      id,
      displaytext: "Tiny, renamed",
      ostypeid: "Debian GNU/Linux 12 (64-bit)",
      passwordenabled: "false",
      format: "QCOW2",
    });
    expect(updated.json.template).toMatchObject({
      id,
      displaytext: "Tiny, renamed",
      ostypeid: "Debian GNU/Linux 12 (64-bit)",
      passwordenabled: false,
    });
    const relisted = await waitFor("the update in listTemplates", async () => {
      const row = await listed(id);
      return row?.displaytext === "Tiny, renamed" ? row : undefined;
    });
    expect(relisted).toMatchObject({ isready: true, passwordenabled: false });
    expect(await refused(admin, { command: "updateTemplate", id, format: "RAW" })).toMatchObject({
      status: 431,
      errortext: expect.stringContaining("its image is QCOW2"),
    });
    expect(await refused(admin, { command: "updateTemplate", id, name: "other" })).toMatchObject({
      status: 431,
      errortext: expect.stringContaining("name cannot be changed"),
    });
    expect(await refused(user, { command: "updateTemplate", id, displaytext: "mine" })).toMatchObject({
      status: 531,
    });

    // As CloudStack: not while a VM uses it (its disk is an overlay of the image).
    await client.create(Resources.virtualMachines, {
      metadata: { name: "rt-vm", namespace },
      spec: { zone: ZONE, serviceOffering: OFFERING, template: name, placement: { host: HOST } },
    });
    await waitFor("rt-vm Running", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "rt-vm", namespace);
      return vm.status?.state === "Running";
    });
    expect(await refused(admin, { command: "deleteTemplate", id })).toMatchObject({
      status: 431,
      errortext: expect.stringContaining(
        `Unable to delete template with id: ${id} because VM instances: [${namespace}/rt-vm,`,
      ),
    });
    expect(secondaryFiles(id)).toEqual([`${id}.qcow2`]);
    await client.delete(Resources.virtualMachines, "rt-vm", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "rt-vm", namespace);

    // Refused (and nothing done) until the API's cache no longer holds the VM and its ROOT volume.
    const deleted = await waitFor("deleteTemplate accepted once no VM uses it", async () => {
      const answer = await jobOf(endpoint, admin, { command: "deleteTemplate", id });
      return answer.status === 200 ? answer : undefined;
    });
    expect(deleted.job).toMatchObject({ jobstatus: 1, jobresult: { success: true } });
    await waitUntilGone(client, Resources.templates, name);
    expect(secondaryFiles(id)).toEqual([]);
    await waitFor("the template gone from listTemplates", async () => (await listed(id)) === undefined);
  });

  it("shows a wrong checksum as isready=false with the mismatch, and deletes what it left", async () => {
    const name = `rt-wrong-${suffix}`;
    const { command: _, ...args } = registration(name, { checksum: `{SHA-256}${"0".repeat(64)}` });
    const registered = await cs("registerTemplate", args);
    const id = (registered.json.template as Row[])[0]?.id as string;
    const failed = await waitFor("the checksum mismatch in listTemplates", async () => {
      const row = await listed(id);
      return typeof row?.status === "string" && /checksum/i.test(row.status) ? row : undefined;
    });
    expect(failed).toMatchObject({
      isready: false,
      status: `checksum "{SHA-256}${SHA256}" didn't match the given value, "{SHA-256}${"0".repeat(64)}"`,
    });
    expect(secondaryFiles(id)).toEqual([]);
    const deleted = await jobOf(endpoint, admin, { command: "deleteTemplate", id });
    expect(deleted.job).toMatchObject({ jobstatus: 1 });
    await waitUntilGone(client, Resources.templates, name);
    expect(secondaryFiles(id)).toEqual([]);
  });

  it("refuses bad input with CloudStack's errors and leaves nothing behind", async () => {
    const cases: [string, Record<string, string>, number, RegExp][] = [
      ["404", { url: `${base}/missing.qcow2` }, 431, /HTTP 404/],
      ["closed", { url: "http://127.0.0.1:1/tiny.qcow2" }, 431, /ECONNREFUSED/],
      ["metadata", { url: "http://169.254.169.254/latest/meta-data" }, 431, /link-local/],
      ["zone", { zoneid: randomUUID() }, 431, /Unable to find zone by id/],
      ["md5", { checksum: `{MD5}${"a".repeat(32)}` }, 431, /cannot be verified/],
      ["iso", { format: "ISO" }, 431, /Image format ISO is not supported/],
      ["xen", { hypervisor: "XenServer" }, 431, /Stratus runs KVM/],
      ["private", { ispublic: "false" }, 431, /ispublic=false/],
    ];
    for (const [label, extra, status, message] of cases) {
      const name = `rt-bad-${label}-${suffix}`;
      const answer = await refused(admin, registration(name, extra));
      expect({ label, ...answer }).toMatchObject({
        label,
        status,
        errortext: expect.stringMatching(message),
      });
      await noTemplate(name);
    }
    expect(requests.get("/missing.qcow2")).toBe(1);

    // Only administrators register, and a user's request never reaches the URL.
    const before = requests.get("/tiny.qcow2") ?? 0;
    const byUser = await refused(user, registration(`rt-user-${suffix}`));
    expect(byUser).toMatchObject({ status: 531, errortext: expect.stringContaining("administrators") });
    expect(requests.get("/tiny.qcow2") ?? 0).toBe(before);
    await noTemplate(`rt-user-${suffix}`);

    // A duplicate name: the first template stays as it was.
    const name = `rt-dup-${suffix}`;
    const { command: _, ...args } = registration(name);
    expect((await cs("registerTemplate", args)).ok).toBe(true);
    const first = await client.get<Template>(Resources.templates, name);
    await waitFor(
      "the first template cached",
      async () => (await listed(first.metadata.uid as string)) ?? undefined,
    );
    expect(await refused(admin, registration(name, { displaytext: "second" }))).toMatchObject({
      status: 431,
      errortext: expect.stringContaining("already exists"),
    });
    expect((await client.get<Template>(Resources.templates, name)).spec.displayName).toBe(`Template ${name}`);
    await jobOf(endpoint, admin, { command: "deleteTemplate", id: first.metadata.uid as string });
    await waitUntilGone(client, Resources.templates, name);
    expect(secondaryFiles(first.metadata.uid as string)).toEqual([]);
  });
});
