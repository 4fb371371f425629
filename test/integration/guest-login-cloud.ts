// A small cloud for the guest-login API tests (keypairs-api, user-data-api): two accounts with the
// manifests' tenant role, a zone, an offering, a plain and a password-enabled template, a network
// per account, and only the API component: VMs deployed with startvm=false are Stopped without a
// host, which is all the key pair, user data and password commands need.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll } from "vitest";
import { SECRET, type Secret } from "../../apiserver/api.ts";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import {
  type Account,
  bindCloudUserRole,
  catalogReaderRole,
  makeAccount,
  cs as runCs,
} from "./cloudstack-accounts.ts";
import { type StratusProcess, startApiServer } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

export const LAPTOP_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT6 test@example";
export const LAPTOP_FINGERPRINT = "3e:b1:cd:d2:44:b1:25:3f:37:a5:22:b4:14:d6:23:a5";
export const ECDSA_KEY =
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHIva4UVBR7ieGuDsweOHGAaJgPnuFEnT7rAC4YV5tT1LzhKDZ80ci7BA48TjOiwcmfDKq9wPDr4tneJPRX1nGQ=";

const CRD: ResourceType = {
  group: "apiextensions.k8s.io",
  version: "v1",
  plural: "customresourcedefinitions",
  kind: "CustomResourceDefinition",
  namespaced: false,
};
/** The VM fields the guest-login branch adds to the kind; the tests add them if the CRD lacks them. */
const GUEST_LOGIN_FIELDS = {
  keyPairs: { type: "array", maxItems: 16, items: { type: "string", maxLength: 253 } },
  passwordSecret: { type: "string", maxLength: 253 },
};

export type Json = Record<string, unknown>;
const uidOf = (object: unknown) => (object as KubeObject).metadata.uid as string;
type CrdObject = KubeObject & {
  spec: { versions: { schema: { openAPIV3Schema: { properties: { spec: { properties: Json } } } } }[] };
};

export interface GuestLoginCloud {
  client: KubeClient;
  endpoint: string;
  api: StratusProcess;
  alice: Account;
  bob: Account;
  workDir: string;
  suffix: string;
  zone: string;
  ids: { zone: string; offering: string; template: string; passwordTemplate: string };
}

/** Sets the cloud up before the file's tests (hooks of the calling file) and tears it down after. */
export function useGuestLoginCloud(prefix: string) {
  const suffix = randomBytes(3).toString("hex");
  const cloud = { suffix, zone: `${prefix}-zone-${suffix}` } as GuestLoginCloud;
  let addedGuestLoginFields = false;

  /** `cs` as an account (POST with `post`): the JSON it printed, errors included. */
  const cs = (account: Account, command: string, args: Record<string, string> = {}, post = false) =>
    runCs(cloud.endpoint, account, command, args, { post });
  /** The error envelope of a refused command (cs exits 0 whatever the answer): its code and text. */
  const refused = async (
    account: Account,
    command: string,
    args: Record<string, string>,
    post = false,
  ): Promise<{ errorcode?: number; errortext?: string }> => {
    const answer = await cs(account, command, args, post);
    return (answer.json[`${command.toLowerCase()}response`] ?? answer.json) as Json;
  };
  const deployArgs = (name: string, template = cloud.ids.template) => ({
    serviceofferingid: cloud.ids.offering,
    templateid: template,
    zoneid: cloud.ids.zone,
    name,
    startvm: "false",
  });
  const vmNamed = (account: Account, name: string) =>
    cloud.client
      .get<VirtualMachine>(Resources.virtualMachines, name, account.namespace)
      .catch(() => undefined);
  const secretNamed = (account: Account, name: string) =>
    cloud.client.get<Secret>(SECRET, name, account.namespace).catch(() => undefined);

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    const client = new KubeClient(controlPlane.kubeConfig);
    cloud.client = client;
    const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
    const catalogRole = await catalogReaderRole(client, `${prefix}-catalog-${suffix}`);
    const account = (name: string) =>
      makeAccount(client, { keysNamespace, name: `${prefix}-${name}`, suffix, clusterRoles: [catalogRole] });
    cloud.alice = await account("alice");
    cloud.bob = await account("bob");
    // The manifests' own tenant role, bound in each account, is what lets them manage key pairs.
    await bindCloudUserRole(client, suffix, [cloud.alice, cloud.bob]);
    addedGuestLoginFields = await ensureGuestLoginFields(client, cloud.alice.namespace);

    const zone = await client.create(Resources.zones, { metadata: { name: cloud.zone }, spec: {} });
    const offering = await client.create(Resources.serviceOfferings, {
      metadata: { name: `${prefix}-small-${suffix}` },
      spec: { cpu: 1, memory: "128Mi" },
    });
    const source = { url: "http://127.0.0.1:9/never-downloaded.qcow2" };
    const template = await client.create(Resources.templates, {
      metadata: { name: `${prefix}-plain-${suffix}` },
      spec: { source },
    });
    const passwordTemplate = await client.create(Resources.templates, {
      metadata: { name: `${prefix}-password-${suffix}` },
      spec: { source, passwordEnabled: true },
    });
    cloud.ids = {
      zone: uidOf(zone),
      offering: uidOf(offering),
      template: uidOf(template),
      passwordTemplate: uidOf(passwordTemplate),
    };
    for (const each of [cloud.alice, cloud.bob])
      await client.create(Resources.networks, {
        metadata: { name: "net", namespace: each.namespace },
        spec: { zone: cloud.zone, cidr: "10.9.0.0/24" },
      });
    cloud.workDir = await mkdtemp(join(tmpdir(), `stratus-${prefix}-`));
    const started = await startApiServer({
      kubeconfigPath: controlPlane.kubeconfigPath,
      client,
      identity: `${prefix}-${suffix}-api`,
      keysNamespace,
    });
    cloud.api = started.process;
    cloud.endpoint = started.endpoint;
  });

  afterEach((context) => {
    if (context.task.result?.state === "fail")
      process.stderr.write(`--- api:\n${cloud.api?.logs().slice(-3000)}\n`);
  });

  afterAll(async () => {
    const { client } = cloud;
    await cloud.api?.stop("SIGKILL");
    if (!client) return;
    // No operator runs here to release the finalizers the admission policy adds: the test does.
    const release = async (type: ResourceType, object: KubeObject) => {
      const { name, namespace } = object.metadata;
      await client
        .mergePatch(type, name as string, namespace, { metadata: { finalizers: null } })
        .catch(() => undefined);
      await client.delete(type, name as string, namespace).catch(() => undefined);
    };
    for (const each of [cloud.alice, cloud.bob].filter(Boolean))
      for (const vm of (await client.list(Resources.virtualMachines, { namespace: each.namespace })).items)
        await release(Resources.virtualMachines, vm);
    if (addedGuestLoginFields) await removeGuestLoginFields(client);
    for (const [type, name] of [
      [Resources.templates, `${prefix}-plain-${suffix}`],
      [Resources.templates, `${prefix}-password-${suffix}`],
      [Resources.serviceOfferings, `${prefix}-small-${suffix}`],
      [Resources.zones, cloud.zone],
    ] as const)
      await release(type, { metadata: { name } });
    await client.close();
    if (cloud.workDir) await rm(cloud.workDir, { recursive: true, force: true });
  });

  return { cloud, cs, refused, deployArgs, vmNamed, secretNamed };
}

/** Adds the guest-login VM fields to the installed CRD when it lacks them; whether it did. */
async function ensureGuestLoginFields(client: KubeClient, namespace: string): Promise<boolean> {
  const name = `${Resources.virtualMachines.plural}.${Resources.virtualMachines.group}`;
  const crd = await client.get<CrdObject>(CRD, name);
  const properties = crd.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};
  if ("keyPairs" in properties && "passwordSecret" in properties) return false;
  Object.assign(properties, GUEST_LOGIN_FIELDS);
  await client.replace(CRD, crd);
  // The API server serves a changed schema a moment later: a probe VM shows when fields are kept.
  await waitFor("the VirtualMachine kind to keep spec.keyPairs", async () => {
    const probe = await client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { generateName: "probe-", namespace },
      spec: {
        zone: "probe",
        serviceOffering: "probe",
        template: "probe",
        runStrategy: "Halted",
        keyPairs: ["probe"],
      },
    } as VirtualMachine);
    const name = probe.metadata.name as string;
    await client.mergePatch(Resources.virtualMachines, name, namespace, { metadata: { finalizers: null } });
    await client.delete(Resources.virtualMachines, name, namespace);
    return "keyPairs" in probe.spec;
  });
  return true;
}

async function removeGuestLoginFields(client: KubeClient): Promise<void> {
  const name = `${Resources.virtualMachines.plural}.${Resources.virtualMachines.group}`;
  const crd = await client.get<CrdObject>(CRD, name);
  const properties = crd.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};
  for (const field of Object.keys(GUEST_LOGIN_FIELDS)) delete properties[field];
  await client.replace(CRD, crd);
}
