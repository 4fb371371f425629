// What a guest is told at boot: its SSH keys (spec.sshKeys and the SSHKeyPairs it names), its user
// data and password (Secrets only the agent of its host reads, through virtualmachines/userdata)
// and its NICs' addresses, gathered into its config drive (config-drive.ts) before it starts.
import { join } from "node:path";
import { addressPlan } from "../crds/addressing.ts";
import type { Network, VirtualMachine } from "../crds/index.ts";
import { isNotFound, type KubeClient } from "../runtime/client.ts";
import {
  type ConfigDriveContent,
  ConfigDriveError,
  ensureConfigDrive,
  needsConfigDrive,
  removeConfigDrive,
} from "./config-drive.ts";
import { type RunPlan, vmNics } from "./planner.ts";
import { HostProblem, Waiting } from "./problem.ts";

/** Where the agent reads what only a VM's host may know. */
export interface GuestDataSource {
  /** The VM's user data and password, base64 as in their Secrets. */
  secrets(vm: VirtualMachine): Promise<{ userData?: string; password?: string }>;
  /** The public key of an SSHKeyPair, or undefined when there is none of that name. */
  publicKey(namespace: string, name: string): Promise<string | undefined>;
}

const SUBRESOURCES = "/apis/subresources.stratus.io/v1alpha1";
const SSH_KEY_PAIRS = "/apis/stratus.io/v1alpha1";

/** The source through the API server: the aggregated userdata subresource, and SSHKeyPairs by name. */
export function apiGuestDataSource(client: KubeClient): GuestDataSource {
  return {
    secrets: (vm) =>
      client.request<{ userData?: string; password?: string }>(
        "GET",
        `${SUBRESOURCES}/namespaces/${vm.metadata.namespace}/virtualmachines/${vm.metadata.name}/userdata`,
        { verb: "get", resource: "virtualmachines/userdata" },
      ),
    publicKey: async (namespace, name) => {
      try {
        const pair = await client.request<{ spec?: { publicKey?: string } }>(
          "GET",
          `${SSH_KEY_PAIRS}/namespaces/${encodeURIComponent(namespace)}/sshkeypairs/${encodeURIComponent(name)}`,
          { verb: "get", resource: "sshkeypairs" },
        );
        return pair.spec?.publicKey;
      } catch (error) {
        // No such key pair, or no SSHKeyPair kind in this cluster yet: the same to the VM.
        if (isNotFound(error)) return undefined;
        throw error;
      }
    },
  };
}

/** A VM's config drive on this host: in a folder of the image cache that its pruning never reads. */
export function configDrivePath(cacheDir: string, vmUid: string): string {
  return join(cacheDir, "config-drives", `${vmUid}.iso`);
}

/** Whether the VM has anything for a config drive that only the API can tell (not in its spec). */
function readsSecrets(vm: VirtualMachine): boolean {
  return vm.spec.userDataSecret !== undefined || vm.spec.passwordSecret !== undefined;
}

/** The NICs as planned: each with its MAC, its address and its Network. */
type PlannedNics = { nics: readonly Pick<RunPlan["nics"][number], "mac" | "ip" | "network">[] };

/** The NICs of a guest arriving by live migration, as its drive names them (no plan is made for it). */
export function arrivingNics(
  vm: VirtualMachine,
  networks: ReadonlyMap<string, Network>,
): PlannedNics["nics"] {
  return vmNics(vm).flatMap((nic) => {
    const network = networks.get(nic.network);
    return network ? [{ mac: nic.mac, network, ...(nic.ip ? { ip: nic.ip } : {}) }] : [];
  });
}

/** The content of the VM's drive, read from its spec, its plan and the source. */
export async function guestDriveContent(
  vm: VirtualMachine,
  plan: PlannedNics,
  zone: string,
  source: GuestDataSource | undefined,
): Promise<ConfigDriveContent> {
  const namespace = vm.metadata.namespace as string;
  if (!source && (readsSecrets(vm) || (vm.spec.keyPairs ?? []).length > 0))
    throw new HostProblem(
      "GuestDataUnavailable",
      "This host agent cannot read user data, passwords or key pairs (it runs without an API source).",
    );
  const pairs = await Promise.all(
    (vm.spec.keyPairs ?? []).map(async (name) => ({
      name,
      key: await source?.publicKey(namespace, name),
    })),
  );
  const missing = pairs.filter((p) => !p.key).map((p) => p.name);
  if (missing.length > 0)
    throw new Waiting(
      "KeyPairNotFound",
      `SSHKeyPair ${missing.map((m) => `"${m}"`).join(", ")} does not exist in namespace ${namespace}; the VM starts once it does.`,
      { shown: true },
    );
  const secrets = readsSecrets(vm) && source ? await source.secrets(vm) : {};
  const keys = [...(vm.spec.sshKeys ?? []), ...pairs.map((p) => p.key as string)];
  return {
    vm: { uid: vm.metadata.uid as string, name: vm.metadata.name as string, namespace },
    zone,
    serviceOffering: vm.spec.serviceOffering,
    publicKeys: [...new Set(keys.map((key) => key.trim()))],
    ...(secrets.userData ? { userData: Buffer.from(secrets.userData, "base64") } : {}),
    ...(secrets.password ? { password: Buffer.from(secrets.password, "base64").toString("utf8") } : {}),
    nics: plan.nics.map((nic) => {
      const addresses = addressPlan(nic.network);
      const prefixLength = Number(nic.network.spec.cidr?.split("/")[1] ?? 24);
      return {
        mac: nic.mac,
        ...(addresses && nic.ip
          ? { ipv4: { address: nic.ip, prefixLength, gateway: addresses.gateway } }
          : {}),
        // libvirt's dnsmasq on the gateway answers DNS (the host guard lets it through).
        dns: nic.network.spec.dns ?? (addresses ? [addresses.gateway] : []),
      };
    }),
  };
}

/**
 * Builds (or keeps) the VM's config drive before its domain is defined or started; returns its
 * path, or undefined when the VM has nothing to tell its guest (any old drive goes).
 */
export async function prepareConfigDrive(
  vm: VirtualMachine,
  plan: PlannedNics,
  options: { cacheDir: string; zone: string; source: GuestDataSource | undefined },
): Promise<string | undefined> {
  const path = configDrivePath(options.cacheDir, vm.metadata.uid as string);
  const content = await guestDriveContent(vm, plan, options.zone, options.source);
  if (!needsConfigDrive(content)) {
    await removeConfigDrive(path);
    return undefined;
  }
  try {
    await ensureConfigDrive(content, path);
  } catch (error) {
    if (error instanceof ConfigDriveError) throw new HostProblem("ConfigDriveInvalid", error.message);
    throw error;
  }
  return path;
}
