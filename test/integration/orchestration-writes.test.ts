// What a VM start costs the API server on the control-plane side, with the real operator and no
// host agent: the finalizers come with the create (admission policy), and compute prepares and
// places the VM in one status write; storage, network and fabric write nothing per VM on the way.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DISK_FINALIZER, DOMAIN_FINALIZER, STORAGE_FINALIZER } from "../../crds/finalizers.ts";
import {
  type Host,
  type IPAddress,
  type Network,
  Resources,
  type VirtualMachine,
  type Volume,
} from "../../crds/index.ts";
import { localPoolName } from "../../crds/kinds/storage-pool.ts";
import { macFor } from "../../crds/nics.ts";
import { KubeClient, type KubeObject, objectKey } from "../../runtime/client.ts";
import { Informer } from "../../runtime/informer.ts";
import { LEASE } from "../../runtime/leader-election.ts";
import { kubeMicroTime } from "../../runtime/time.ts";
import { type StratusProcess, startOperator } from "./processes.ts";
import { sharedControlPlane, useNamespace, waitFor, waitUntilGone } from "./support.ts";

const suffix = randomBytes(3).toString("hex");
const ZONE = `writes-${suffix}`;
const EMPTY_ZONE = `writes-empty-${suffix}`;
const HOST = `writes-h-${suffix}`;
const OFFERING = `writes-small-${suffix}`;
const TEMPLATE = `writes-tiny-${suffix}`;

const typeMeta = <K extends string>(kind: K) => ({ apiVersion: "stratus.io/v1alpha1" as const, kind });

/** Counts every change the API server reports for objects of one kind (each is one write). */
function countWrites<T extends KubeObject>(informer: Informer<T>): Map<string, number> {
  const updates = new Map<string, number>();
  informer.addHandlers({
    onUpdate: (_, object) => updates.set(objectKey(object), (updates.get(objectKey(object)) ?? 0) + 1),
  });
  return updates;
}

describe("the orchestration's writes", () => {
  let client: KubeClient;
  let namespace: string;
  let operator: StratusProcess;
  const informers: Informer<KubeObject>[] = [];

  beforeAll(async () => {
    const controlPlane = await sharedControlPlane();
    client = new KubeClient(controlPlane.kubeConfig);
    namespace = await useNamespace(controlPlane.kubeConfig, "writes");
    await client.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
    await client.create(Resources.serviceOfferings, {
      metadata: { name: OFFERING },
      spec: { cpu: 1, memory: "64Mi" },
    });
    await client.create(Resources.templates, {
      metadata: { name: TEMPLATE },
      spec: { source: { url: "http://127.0.0.1:9/tiny.qcow2" } },
    });
    // A host as its agent would register it, and a heartbeat that stays current for the test.
    await client.create(Resources.hosts, { metadata: { name: HOST }, spec: { zone: ZONE } });
    await client.apply(
      Resources.hosts,
      {
        metadata: { name: HOST },
        status: {
          capacity: { cpu: 4, memory: "8Gi" },
          storagePools: [{ name: localPoolName(HOST), ready: true, capacity: "100Gi" }],
        },
      },
      { fieldManager: "test-agent", subresource: "status" },
    );
    await client.apply(
      LEASE,
      {
        metadata: { name: `host-${HOST}`, namespace, labels: { "stratus.io/host": HOST } },
        spec: { holderIdentity: HOST, leaseDurationSeconds: 3600, renewTime: kubeMicroTime(new Date()) },
      },
      { fieldManager: "test-agent" },
    );
    await client.create(Resources.networks, {
      metadata: { name: "net", namespace },
      spec: { zone: ZONE, cidr: "10.91.0.0/24" },
    });
    operator = await startOperator({
      kubeconfigPath: controlPlane.kubeconfigPath,
      identity: `writes-${suffix}`,
      args: [`--lease-namespace=${namespace}`, "--leader-elect=false"],
    });
    // Placement needs the host's local pool (storage makes it) in compute's cache.
    await waitFor("the host's local pool", () => client.get(Resources.storagePools, localPoolName(HOST)));
    await waitFor("the host Ready", async () =>
      (await client.get<Host>(Resources.hosts, HOST)).status?.conditions?.some(
        (c) => c.type === "Ready" && c.status === "True",
      ),
    );
  });

  afterAll(async () => {
    for (const informer of informers) await informer.stop();
    await operator?.stop("SIGKILL");
    await client?.close();
  });

  it("gives VMs and volumes their finalizers in the create itself, and releases what never reached a host", async () => {
    const vm = await client.create<VirtualMachine>(Resources.virtualMachines, {
      ...typeMeta("VirtualMachine"),
      metadata: { name: "fin", namespace },
      spec: { zone: EMPTY_ZONE, serviceOffering: OFFERING, template: TEMPLATE },
    });
    expect(vm.metadata.finalizers).toEqual([DOMAIN_FINALIZER]);
    const data = await client.create<Volume>(Resources.volumes, {
      ...typeMeta("Volume"),
      metadata: { name: "fin-data", namespace },
      spec: { zone: EMPTY_ZONE, size: "1Gi" },
    });
    expect(data.metadata.finalizers).toEqual([DISK_FINALIZER, STORAGE_FINALIZER]);
    // compute prepares the VM's root volume even where no host can take the VM.
    const root = await waitFor("the root volume", () =>
      client.get<Volume>(Resources.volumes, "fin-root", namespace).catch(() => undefined),
    );
    expect(root.metadata.finalizers).toEqual([DISK_FINALIZER]);

    // No host ever held them: compute and storage let them go (the root volume with its VM).
    await client.delete(Resources.virtualMachines, "fin", namespace);
    await client.delete(Resources.volumes, "fin-data", namespace);
    await waitUntilGone(client, Resources.virtualMachines, "fin", namespace);
    await waitUntilGone(client, Resources.volumes, "fin-data", namespace);
    await waitUntilGone(client, Resources.volumes, "fin-root", namespace);
  });

  it("prepares and places a VM in one status write, with its root volume and address created once each", async () => {
    const vmInformer = new Informer<VirtualMachine>(client, Resources.virtualMachines, { namespace });
    const volumeInformer = new Informer<Volume>(client, Resources.volumes, { namespace });
    const addressInformer = new Informer<IPAddress>(client, Resources.ipAddresses, { namespace });
    for (const informer of [vmInformer, volumeInformer, addressInformer]) {
      informers.push(informer as unknown as Informer<KubeObject>);
      informer.start();
      await informer.waitForSync();
    }
    const vmWrites = countWrites(vmInformer);
    const volumeWrites = countWrites(volumeInformer);
    const addressWrites = countWrites(addressInformer);

    const created = await client.create<VirtualMachine>(Resources.virtualMachines, {
      ...typeMeta("VirtualMachine"),
      metadata: { name: "counted", namespace },
      spec: {
        zone: ZONE,
        serviceOffering: OFFERING,
        template: TEMPLATE,
        nics: [{ name: "eth0", network: "net" }],
      },
    });
    const placed = await waitFor("the VM placed", async () => {
      const vm = await client.get<VirtualMachine>(Resources.virtualMachines, "counted", namespace);
      return vm.status?.host ? vm : undefined;
    });
    // The roll-ups that follow the VM (host allocation, network usage) have run: the operator is done.
    await waitFor("the roll-ups", async () => {
      const host = await client.get<Host>(Resources.hosts, HOST);
      const network = await client.get<Network>(Resources.networks, "net", namespace);
      return host.status?.allocated?.virtualMachines === 1 && network.status?.addresses?.used === 1;
    });
    await waitFor("the informers to have seen the placement", () =>
      vmInformer.get(`${namespace}/counted`)?.status?.host ? true : undefined,
    );

    const address = placed.status?.nics?.[0]?.ipAddress as string;
    expect(placed.status).toMatchObject({
      host: HOST,
      nics: [
        {
          name: "eth0",
          network: "net",
          macAddress: macFor(created.metadata.uid as string, 0),
          ipAddress: address,
        },
      ],
    });
    expect(placed.status?.state).toBeUndefined(); // the agent's to tell
    for (const type of ["Scheduled", "VolumesReady", "NetworksReady"])
      expect(placed.status?.conditions?.find((c) => c.type === type)?.status, type).toBe("True");
    expect(vmWrites.get(`${namespace}/counted`)).toBe(1);
    const root = volumeInformer.get(`${namespace}/counted-root`);
    expect(root?.metadata.finalizers).toEqual([DISK_FINALIZER]);
    expect(volumeWrites.get(`${namespace}/counted-root`) ?? 0).toBe(0);
    const addresses = addressInformer.list().filter((a) => a.spec.virtualMachine === "counted");
    expect(addresses.map((a) => a.spec.address)).toEqual([address]);
    expect(addressWrites.size).toBe(0);
    const managers = (
      placed.metadata as { managedFields?: { manager: string; subresource?: string }[] }
    ).managedFields
      ?.filter((f) => f.subresource === "status")
      .map((f) => f.manager);
    expect(managers).toEqual(["stratus-operator/compute"]);
  });
});
