// Async jobs: each async command is an AsyncJob object (its UID is the jobid), so any replica
// answers queryAsyncJobResult and jobs survive restarts. A controller finishes a job when its
// target reaches the state the command asked for, freezes the result, and deletes the job an hour
// after it ended.
import type { Logger } from "pino";
import { displayState } from "../crds/display-state.ts";
import {
  type AsyncJob,
  DEPLOY_FAILED_ANNOTATION,
  RESTART_ANNOTATION,
  Resources,
  rootVolumeName,
  type VirtualMachine,
  type Volume,
} from "../crds/index.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { ADMITTED_CONDITION } from "../crds/volume-admission.ts";
import { isNotFound, type KubeObject, type ResourceType } from "../runtime/client.ts";
import { findCondition } from "../runtime/conditions.ts";
import { Controller } from "../runtime/controller.ts";
import type { Informer } from "../runtime/informer.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { applyStatus } from "../runtime/objects.ts";
import type { Call, CloudStackApi } from "./api.ts";
import { ERROR, errorBody, formatDate, type Json } from "./envelope.ts";
import { withVmPassword } from "./guest-login.ts";
import { networkView, virtualMachineView, volumeView } from "./views.ts";

/** The VM a volume is attached to, as the cache shows it. */
export function attachedTo(api: CloudStackApi, volume: Volume): VirtualMachine | undefined {
  const name = volume.status?.attachedTo?.virtualMachine;
  return name ? api.vms.get(`${volume.metadata.namespace}/${name}`) : undefined;
}

/** Finished jobs are kept this long for clients that poll late, then deleted. */
export const JOB_RETENTION_MS = 60 * 60 * 1000;
const FIELD_MANAGER = "stratus-apiserver";
/** Left out of a job's parameters: the signature, and secrets (a password, user data) kept elsewhere. */
const UNRECORDED_PARAMS = new Set([
  "signature",
  "apikey",
  "sessionkey",
  "expires",
  "signatureversion",
  "password",
  "userdata",
]);

export async function submitJob(
  call: Call,
  command: string,
  target: KubeObject & { kind?: string },
  /** What the command's outcome needs besides the request (e.g. the object it made). */
  extra: Record<string, string> = {},
): Promise<AsyncJob> {
  const parameters = {
    ...Object.fromEntries(
      Object.entries(call.params.raw).filter(([name]) => !UNRECORDED_PARAMS.has(name.toLowerCase())),
    ),
    ...extra,
  };
  // Made by this component itself: its users may not create jobs (RBAC), so a job's user, account
  // and target are what this component authorized, never what a tenant wrote.
  return call.api.client.create<AsyncJob>(Resources.asyncJobs, {
    apiVersion: "stratus.io/v1alpha1",
    kind: "AsyncJob",
    metadata: { generateName: "job-", namespace: target.metadata.namespace ?? call.caller.account },
    spec: {
      command,
      parameters,
      user: call.caller.user,
      ...(call.caller.groups.length > 0 ? { groups: [...call.caller.groups] } : {}),
      account: call.caller.account,
      target: {
        kind: target.kind ?? "VirtualMachine",
        name: target.metadata.name as string,
        uid: target.metadata.uid as string,
      },
    },
  });
}

/** An async command's answer: the job it submits (submitJob), by its id. */
export async function jobAnswer(
  call: Call,
  command: string,
  target: KubeObject & { kind?: string },
  extra?: Record<string, string>,
): Promise<Json> {
  const job = await submitJob(call, command, target, extra);
  return { jobid: job.metadata.uid as string };
}

/** The job parameter deleteNetwork records the VMs that still use the network in: the job fails. */
export const IN_USE_BY = "stratus.inuseby";

/**
 * An object a job names by id (its target, or one in its parameters): a namespaced one only in the
 * job's own namespace, so no job reaches into another account.
 */
export function jobObject<T extends KubeObject>(
  informer: Informer<T>,
  job: AsyncJob,
  uid: string | undefined,
): T | undefined {
  if (!uid) return undefined;
  return informer
    .byIndex("uid", uid.toLowerCase())
    .find((o) => o.metadata.namespace === undefined || o.metadata.namespace === job.metadata.namespace);
}

/** A job's target as this replica's cache holds it, and its API type, by the kind the job names. */
function cachedTarget(api: CloudStackApi, job: AsyncJob): [KubeObject | undefined, ResourceType] | undefined {
  const uid = job.spec.target?.uid;
  const kind = job.spec.target?.kind === "Snapshot" ? Resources.volumeSnapshots.kind : job.spec.target?.kind;
  const found = <T extends KubeObject>(informer: Informer<T>, type: ResourceType) =>
    type.kind === kind
      ? ([jobObject(informer, job, uid), type] as [KubeObject | undefined, ResourceType])
      : undefined;
  return (
    found(api.vms, Resources.virtualMachines) ??
    found(api.volumes, Resources.volumes) ??
    found(api.networks, Resources.networks) ??
    found(api.templates, Resources.templates) ??
    found(api.volumeSnapshots, Resources.volumeSnapshots) ??
    found(api.affinityGroups, Resources.affinityGroups) ??
    found(api.storagePools, Resources.storagePools) ??
    found(api.hosts, Resources.hosts) ??
    found(api.publicIPAddresses, Resources.publicIPAddresses) ??
    found(api.portForwardingRules, Resources.portForwardingRules) ??
    found(api.firewallRules, Resources.firewallRules) ??
    found(api.loadBalancerRules, Resources.loadBalancerRules) ??
    found(api.egressFirewallRules, Resources.egressFirewallRules)
  );
}

/**
 * Whether the job's target exists though this replica's cache has not seen it yet. A job and its
 * target arrive on separate watches, so the job can come first: deciding then would call a VM made
 * a moment ago deleted (or a destroy done). The API server settles it; the target's own watch event
 * wakes the job again.
 */
async function targetNotCachedYet(api: CloudStackApi, job: AsyncJob): Promise<boolean> {
  const target = job.spec.target;
  const cached = target?.uid && target.name ? cachedTarget(api, job) : undefined;
  if (!target || !cached || cached[0]) return false;
  const type = cached[1];
  try {
    const live = await api.client.get(
      type,
      target.name,
      type.namespaced ? job.metadata.namespace : undefined,
    );
    return live.metadata.uid === target.uid;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

const JOB_STATUS = { Pending: 0, InProgress: 0, Succeeded: 1, Failed: 2 } as const;

/** queryAsyncJobResult's body (docs/LEGACY-API.md 3.2). */
export function jobView(job: AsyncJob): Json {
  const state = job.status?.state ?? "Pending";
  const finished = state === "Succeeded" || state === "Failed";
  const body: Record<string, Json> = {
    jobid: job.metadata.uid as string,
    accountid: job.metadata.namespace as string,
    account: job.spec.account ?? (job.metadata.namespace as string),
    userid: job.spec.user,
    cmd: job.spec.command,
    jobstatus: JOB_STATUS[state],
    jobprocstatus: 0,
    jobresultcode: state === "Failed" ? (job.status?.error?.code ?? ERROR.INTERNAL) : 0,
    created: formatDate(job.metadata.creationTimestamp) as string,
  };
  if (job.spec.target?.kind) body.jobinstancetype = job.spec.target.kind;
  if (job.spec.target?.uid) body.jobinstanceid = job.spec.target.uid;
  if (finished) {
    body.jobresulttype = "object";
    body.jobresult =
      state === "Succeeded"
        ? ((job.status?.result as Json) ?? { success: true })
        : errorBody(job.status?.error?.code ?? ERROR.INTERNAL, job.status?.error?.text ?? "failed");
    if (job.status?.finishedAt) body.completed = formatDate(job.status.finishedAt) as string;
  }
  return body;
}

/** The job's end, or why it has not ended yet (`waitingFor`, shown in status.waitingFor), or undefined. */
export type Outcome =
  | { result: Json }
  | { error: { code: number; text: string } }
  | { waitingFor: string }
  | undefined;

/** Whether the job's target has reached what the command asked for, or cannot. */
function outcome(job: AsyncJob, api: CloudStackApi): Outcome {
  const targetUid = job.spec.target?.uid;
  const vm = jobObject(api.vms, job, targetUid);
  switch (job.spec.command) {
    case "deployVirtualMachine":
    case "startVirtualMachine":
    case "stopVirtualMachine": {
      if (!vm) return { error: { code: ERROR.INTERNAL, text: "the virtual machine was deleted" } };
      const wanted =
        job.spec.command === "stopVirtualMachine" || vm.spec.runStrategy === "Halted" ? "Stopped" : "Running";
      // Running also means its root disk is reported, so what the client lists next is consistent.
      const root = api.volumes.get(`${vm.metadata.namespace}/${rootVolumeName(vm.metadata.name as string)}`);
      const rootPending = wanted === "Running" && root !== undefined && root.status?.phase !== "Attached";
      if (displayState(vm) === wanted && !rootPending)
        return { result: { virtualmachine: virtualMachineView(vm, api) } };
      return failure(vm);
    }
    case "destroyVirtualMachine": {
      if (vm) return undefined;
      const expunge = Object.entries(job.spec.parameters ?? {}).some(
        ([name, value]) => name.toLowerCase() === "expunge" && value.toLowerCase() === "true",
      );
      return {
        result: {
          virtualmachine: expunge
            ? {}
            : { id: targetUid as string, name: job.spec.target?.name ?? "", state: "Destroyed" },
        },
      };
    }
    case "rebootVirtualMachine": {
      if (!vm) return { error: { code: ERROR.INTERNAL, text: "the virtual machine was deleted" } };
      const requested = vm.metadata.annotations?.[RESTART_ANNOTATION];
      if (requested && vm.status?.restartedAt === requested && displayState(vm) === "Running")
        return { result: { virtualmachine: virtualMachineView(vm, api) } };
      return failure(vm);
    }
    case "createVolume":
    case "updateVolume":
    case "attachVolume":
    case "detachVolume":
    case "resizeVolume": {
      const volume = jobObject(api.volumes, job, targetUid);
      if (!volume) return { error: { code: ERROR.INTERNAL, text: "the volume was deleted" } };
      const parameter = (name: string) =>
        Object.entries(job.spec.parameters ?? {}).find(([key]) => key.toLowerCase() === name)?.[1];
      // The account's primary-storage limit holds the volume (its size, or a resize): CloudStack's 535.
      const admitted = findCondition(volume.status?.conditions, ADMITTED_CONDITION);
      if (
        admitted?.status === "False" &&
        (job.spec.command === "createVolume" ||
          job.spec.command === "attachVolume" ||
          job.spec.command === "resizeVolume")
      )
        return { error: { code: ERROR.RESOURCE_ALLOCATION, text: admitted.message } };
      const done = {
        // In an account with a primary-storage limit, once the storage component granted its size.
        createVolume: () =>
          admitted?.status === "True" || !api.storageLimited(volume.metadata.namespace as string),
        updateVolume: () => true,
        attachVolume: () => {
          const holder = jobObject(api.vms, job, parameter("virtualmachineid"));
          return holder !== undefined && volume.status?.attachedTo?.virtualMachine === holder.metadata.name;
        },
        detachVolume: () => !volume.status?.attachedTo,
        resizeVolume: () =>
          volume.status?.capacity !== undefined &&
          volume.spec.size !== undefined &&
          parseQuantity(volume.status.capacity) >= parseQuantity(volume.spec.size),
      }[job.spec.command]();
      if (done) return { result: { volume: volumeView(volume, api, attachedTo(api, volume)) } };
      // A host that cannot do it says so on the VM (e.g. no hot plug): the job fails with that.
      const holder = attachedTo(api, volume) ?? jobObject(api.vms, job, parameter("virtualmachineid"));
      const ready = holder?.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.status === "False" && ready.reason === "HotPlugUnsupported")
        return { error: { code: ERROR.RESOURCE_UNAVAILABLE, text: ready.message } };
      return undefined;
    }
    case "createTags":
    case "deleteTags":
      return { result: { success: true } };
    case "updateNetwork": {
      const network = jobObject(api.networks, job, targetUid);
      return network
        ? { result: { network: networkView(network, api) } }
        : { error: { code: ERROR.INTERNAL, text: "the network was deleted" } };
    }
    case "deleteNetwork":
      if (job.spec.parameters?.[IN_USE_BY])
        return { error: { code: ERROR.INTERNAL, text: "Failed to delete network" } };
      return jobObject(api.networks, job, targetUid) ? undefined : { result: { success: true } };
    default: {
      const own = api.command(job.spec.command)?.outcome;
      return own
        ? own(job, api)
        : { error: { code: ERROR.INTERNAL, text: `no job handler for ${job.spec.command}` } };
    }
  }
}

/** A job on a VM that ends, with the VM, once `reached` says the VM shows what the command set. */
export function virtualMachineOutcome(
  job: AsyncJob,
  api: CloudStackApi,
  reached: (vm: VirtualMachine) => boolean,
): Outcome {
  const vm = jobObject(api.vms, job, job.spec.target?.uid);
  if (!vm) return { error: { code: ERROR.INTERNAL, text: "the virtual machine was deleted" } };
  return reached(vm) ? { result: { virtualmachine: virtualMachineView(vm, api) } } : undefined;
}

/** A VM that cannot get where its job wants it: no host fits, or its host reports an error. */
function failure(vm: VirtualMachine): Outcome {
  const failedDeploy = vm.metadata.annotations?.[DEPLOY_FAILED_ANNOTATION];
  if (failedDeploy !== undefined) return { error: { code: ERROR.INSUFFICIENT_CAPACITY, text: failedDeploy } };
  const scheduled = vm.status?.conditions?.find((c) => c.type === "Scheduled");
  // An account limit (CPU, memory, volumes, primary storage) holds it: CloudStack refuses with 535.
  const overLimit = [scheduled, vm.status?.conditions?.find((c) => c.type === "VolumesReady")].find(
    (c) => c?.status === "False" && c.reason === "ResourceLimitExceeded",
  );
  if (overLimit) return { error: { code: ERROR.RESOURCE_ALLOCATION, text: overLimit.message } };
  // A group deleted while its VM waited to be placed keeps it off every host, as no room does.
  if (
    scheduled?.status === "False" &&
    (scheduled.reason === "Unschedulable" || scheduled.reason === "AffinityGroupNotFound")
  )
    return {
      error: {
        code: ERROR.INSUFFICIENT_CAPACITY,
        text: `Unable to create a deployment for VM ${vm.metadata.name}: ${scheduled.message}`,
      },
    };
  const ready = vm.status?.conditions?.find((c) => c.type === "Ready");
  if (displayState(vm) === "Error")
    return { error: { code: ERROR.INTERNAL, text: ready?.message ?? "the VM failed" } };
  return undefined;
}

/** Creates whose object goes when the job fails: CloudStack keeps no refused address or rule. */
const UNDONE_WHEN_REFUSED = new Set([
  "associateIpAddress",
  "createPortForwardingRule",
  "createFirewallRule",
  "createLoadBalancerRule",
  "createEgressFirewallRule",
]);

/** As the job's caller, whose RBAC let them make it: this component may delete no tenant's object. */
async function deleteAsJobCaller(api: CloudStackApi, job: AsyncJob, type: ResourceType, object: KubeObject) {
  await api.client
    .impersonating(job.spec.user, job.spec.groups ?? [])
    .delete(type, object.metadata.name as string, object.metadata.namespace, {
      uid: object.metadata.uid as string,
    })
    .catch((failure: unknown) => {
      if (!isNotFound(failure)) throw failure;
    });
}

/**
 * What a refused create leaves, undone as CloudStack leaves nothing: a refused address or rule is
 * deleted, so is a volume past the account's limit that no host made a disk for; a failed deploy
 * is halted (below).
 */
async function undoRefusedCreate(api: CloudStackApi, job: AsyncJob, error: { code: number; text: string }) {
  if (UNDONE_WHEN_REFUSED.has(job.spec.command)) {
    const [object, type] = cachedTarget(api, job) ?? [];
    if (object && type) await deleteAsJobCaller(api, job, type, object);
    return;
  }
  if (job.spec.command === "createVolume" && error.code === ERROR.RESOURCE_ALLOCATION) {
    const volume = jobObject(api.volumes, job, job.spec.target?.uid);
    if (!volume || volume.status?.pool) return;
    await deleteAsJobCaller(api, job, Resources.volumes, volume);
    return;
  }
  await haltFailedDeploy(api, job, error);
}

/**
 * A deploy that found no host, or that its account's limits refuse, is over, as in CloudStack: the
 * VM is halted (it is not placed later unasked) and marked, so it shows Error and holds nothing
 * until the user destroys it.
 */
async function haltFailedDeploy(api: CloudStackApi, job: AsyncJob, error: { code: number; text: string }) {
  if (
    job.spec.command !== "deployVirtualMachine" ||
    (error.code !== ERROR.INSUFFICIENT_CAPACITY && error.code !== ERROR.RESOURCE_ALLOCATION)
  )
    return;
  const vm = api.vms.byIndex("uid", job.spec.target?.uid ?? "")[0];
  if (!vm || vm.metadata.annotations?.[DEPLOY_FAILED_ANNOTATION] !== undefined) return;
  await api.client.mergePatch(Resources.virtualMachines, vm.metadata.name as string, vm.metadata.namespace, {
    metadata: { annotations: { [DEPLOY_FAILED_ANNOTATION]: error.text } },
    spec: { runStrategy: "Halted" },
  });
}

export function jobController(api: CloudStackApi, logger: Logger, metrics: RuntimeMetrics): Controller {
  const byTarget = (uid: string) =>
    api.jobs
      .list()
      .filter((job) => job.spec.target?.uid === uid && !job.status?.finishedAt)
      .map((job) => `${job.metadata.namespace}/${job.metadata.name}`);
  return (
    new Controller({
      name: "async-jobs",
      logger,
      metrics,
      async reconcile(key, log) {
        const job = api.jobs.get(key);
        if (!job) return undefined;
        if (job.status?.finishedAt) {
          const age = Date.now() - Date.parse(job.status.finishedAt);
          if (age < JOB_RETENTION_MS) return { requeueAfterMs: JOB_RETENTION_MS - age };
          await api.client
            .delete(Resources.asyncJobs, job.metadata.name as string, job.metadata.namespace)
            .catch((error) => {
              if (!isNotFound(error)) throw error;
            });
          return undefined;
        }
        if (await targetNotCachedYet(api, job)) return { requeueAfterMs: 1000 };
        const result = await withVmPassword(api, job, outcome(job, api));
        const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
        if (!result || "waitingFor" in result) {
          const waitingFor = result?.waitingFor;
          if (!job.status?.state || job.status.waitingFor !== waitingFor)
            await applyStatus(
              api.client,
              Resources.asyncJobs,
              job,
              {
                state: "InProgress",
                startedAt: job.status?.startedAt ?? now,
                ...(waitingFor ? { waitingFor } : {}),
              },
              FIELD_MANAGER,
            );
          return undefined;
        }
        if ("error" in result) await undoRefusedCreate(api, job, result.error);
        await applyStatus(
          api.client,
          Resources.asyncJobs,
          job,
          {
            state: "result" in result ? "Succeeded" : "Failed",
            ...(job.status?.startedAt ? {} : { startedAt: now }),
            finishedAt: now,
            ...("result" in result ? { result: result.result } : { error: result.error }),
          },
          FIELD_MANAGER,
        );
        log.info(
          { command: job.spec.command, state: "result" in result ? "Succeeded" : "Failed" },
          "job finished",
        );
        return { requeueAfterMs: JOB_RETENTION_MS };
      },
    })
      .watch(api.jobs)
      .watch(api.vms, (vm) => byTarget(vm.metadata.uid as string))
      .watch(api.networks, (network) => byTarget(network.metadata.uid as string))
      .watch(api.storagePools, (pool) => byTarget(pool.metadata.uid as string))
      .watch(api.hosts, (host) => byTarget(host.metadata.uid as string))
      .watch(api.templates, (template) => byTarget(template.metadata.uid as string))
      .watch(api.volumeSnapshots, (snapshot) => byTarget(snapshot.metadata.uid as string))
      .watch(api.affinityGroups, (group) => byTarget(group.metadata.uid as string))
      .watch(api.publicIPAddresses, (pip) => byTarget(pip.metadata.uid as string))
      .watch(api.portForwardingRules, (rule) => byTarget(rule.metadata.uid as string))
      .watch(api.firewallRules, (rule) => byTarget(rule.metadata.uid as string))
      .watch(api.loadBalancerRules, (rule) => byTarget(rule.metadata.uid as string))
      .watch(api.egressFirewallRules, (rule) => byTarget(rule.metadata.uid as string))
      // disableStaticNat and the load balancers' changes end when the network's router has them.
      .watch(api.networks, (network) => {
        const addresses = api.publicIPAddresses
          .list()
          .filter(
            (p) =>
              p.metadata.namespace === network.metadata.namespace && p.spec.network === network.metadata.name,
          );
        const names = new Set(addresses.map((p) => p.metadata.name));
        const balancers = api.loadBalancerRules
          .list()
          .filter(
            (r) => r.metadata.namespace === network.metadata.namespace && names.has(r.spec.publicIPAddress),
          );
        return [...addresses, ...balancers].flatMap((o) => byTarget(o.metadata.uid as string));
      })
      // deleteAccount's job ends when its namespace is gone.
      .watch(api.accountNamespaces, (namespace) => byTarget(namespace.metadata.uid as string))
      // A volume concerns its own jobs, (a ROOT volume) those of the VM that owns it, those of the
      // VM it is attached to (a migration with its volumes), and those of its snapshots (a revert
      // ends when the volume reports it).
      .watch(api.volumes, (volume) => [
        ...byTarget(volume.metadata.uid as string),
        ...(volume.metadata.ownerReferences ?? []).flatMap((owner) => byTarget(owner.uid)),
        ...byTarget(attachedTo(api, volume)?.metadata.uid ?? ""),
        ...api.volumeSnapshots
          .byIndex("volume", `${volume.metadata.namespace}/${volume.metadata.name}`)
          .flatMap((snapshot) => byTarget(snapshot.metadata.uid as string)),
      ])
  );
}
