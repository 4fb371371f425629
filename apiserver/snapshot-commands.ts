// CloudStack's volume snapshot commands over VolumeSnapshots and SnapshotPolicies in the caller's
// account (namespace). Each async command is one object here: what it submits and when its job
// ends (outcome). The agents take, copy and revert the disks; this file only asks and watches.
import { displayState } from "../crds/display-state.ts";
import {
  REVERT_ANNOTATION,
  Resources,
  type SnapshotPolicy,
  type VirtualMachine,
  type Volume,
  type VolumeSnapshot,
} from "../crds/index.ts";
import { isAlreadyExists, isNotFound, ApiError as KubeApiError } from "../runtime/client.ts";
import type { CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { filtered, namespaced, ownedById, ownedByUid, page, patched } from "./listing.ts";
import {
  generatedSnapshotName,
  intervalType,
  maxSnapshots,
  policyName,
  snapshotName,
  snapshotTypeFilter,
  timeZone,
} from "./snapshot-input.ts";
import {
  FOR_DISPLAY_ANNOTATION,
  snapshotFailure,
  snapshotPolicyView,
  snapshotState,
  snapshotType,
  snapshotView,
} from "./snapshot-views.ts";

const SNAPSHOT_KIND = "Snapshot";
const MAX_POLICY_IDS = 100;

/** A volume can be snapshotted once its disk exists (CloudStack: the volume is Ready). */
function requireReadyVolume(volume: Volume): void {
  const phase = volume.status?.phase;
  if (phase !== "Ready" && phase !== "Attached")
    throw new ApiError(
      ERROR.PARAM,
      `VolumeId: ${volume.metadata.uid} is not in Ready state but ${phase ?? "Allocated"}. Cannot take snapshot.`,
    );
}

/** The VM whose disk the volume is: the one it is attached to, its owner (ROOT) or one listing it. */
export function volumeHolder(api: CloudStackApi, volume: Volume): VirtualMachine | undefined {
  const namespace = volume.metadata.namespace as string;
  const name = volume.status?.attachedTo?.virtualMachine;
  if (name) return api.vms.get(`${namespace}/${name}`);
  const owner = volume.metadata.ownerReferences?.find((o) => o.kind === "VirtualMachine");
  if (owner) return api.vms.get(`${namespace}/${owner.name}`);
  return api.vms
    .list()
    .find(
      (vm) =>
        vm.metadata.namespace === namespace &&
        (vm.spec.dataVolumes ?? []).some((slot) => slot.volume === volume.metadata.name),
    );
}

/** The Kubernetes error for a bad policy (the CRD's rules on the schedule) in CloudStack's words. */
function invalidPolicy(error: unknown, schedule: string, interval: string): unknown {
  if (!(error instanceof KubeApiError) || error.status !== 422) return error;
  const causes = (error.body?.details as { causes?: { message?: string }[] } | undefined)?.causes ?? [];
  const why =
    causes
      .map((c) => c.message)
      .filter(Boolean)
      .join("; ") ||
    error.body?.message ||
    error.message;
  return new ApiError(
    ERROR.PARAM,
    `Invalid schedule: ${schedule} for interval type: ${interval}: ${why.replace(/^Invalid value: "object": /, "")}`,
  );
}

const createSnapshot: Command = {
  async: true,
  async handler(call) {
    const volume = await ownedById(call, call.api.volumes, Resources.volumes, "volumeid");
    requireReadyVolume(volume);
    const given = call.params.get("name");
    const name = given
      ? snapshotName(given)
      : generatedSnapshotName(volume.metadata.name as string, new Date());
    const snapshot = await call.caller.client.create<VolumeSnapshot>(Resources.volumeSnapshots, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VolumeSnapshot",
      metadata: {
        name,
        namespace: volume.metadata.namespace as string,
        annotations: { "stratus.io/created-by": "cloudstack-api" },
      },
      spec: { volume: volume.metadata.name as string },
    });
    const job = await submitJob(call, "createSnapshot", { ...snapshot, kind: SNAPSHOT_KIND });
    return { id: snapshot.metadata.uid as string, jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const snapshot = jobObject(api.volumeSnapshots, job, job.spec.target?.uid);
    if (!snapshot) return { error: { code: ERROR.INTERNAL, text: "the snapshot was deleted" } };
    if (snapshot.status?.phase === "Ready") return { result: { snapshot: snapshotView(snapshot, api) } };
    if (snapshot.status?.phase === "Error")
      return { error: { code: ERROR.INTERNAL, text: snapshotFailure(snapshot) } };
    return undefined;
  },
};

const deleteSnapshot: Command = {
  async: true,
  async handler(call) {
    const snapshot = await ownedById(call, call.api.volumeSnapshots, Resources.volumeSnapshots);
    const job = await submitJob(call, "deleteSnapshot", { ...snapshot, kind: SNAPSHOT_KIND });
    await call.caller.client
      .delete(Resources.volumeSnapshots, snapshot.metadata.name as string, snapshot.metadata.namespace)
      .catch((error) => {
        if (!isNotFound(error)) throw error;
      });
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    return jobObject(api.volumeSnapshots, job, job.spec.target?.uid)
      ? undefined
      : { result: { success: true } };
  },
};

/** The revert request a job stands for: the snapshot's name and the job's own id (fresh, unique). */
const revertRequest = (snapshotName: string, jobUid: string) => `${snapshotName}/${jobUid}`;

const revertSnapshot: Command = {
  async: true,
  async handler(call) {
    const snapshot = await ownedById(call, call.api.volumeSnapshots, Resources.volumeSnapshots);
    const state = snapshotState(snapshot);
    if (state !== "BackedUp")
      throw new ApiError(
        ERROR.PARAM,
        `Snapshot should be in BackedUp state: snapshot ${snapshot.metadata.name} (id ${snapshot.metadata.uid}) is ${state}`,
      );
    const volume = call.api.volume(snapshot.metadata.namespace as string, snapshot.spec.volume);
    if (!volume)
      throw new ApiError(
        ERROR.PARAM,
        `The volume ${snapshot.spec.volume} of snapshot ${snapshot.metadata.name} no longer exists`,
      );
    if (volume.status?.phase !== "Ready" && volume.status?.phase !== "Attached")
      throw new ApiError(ERROR.PARAM, "The volume is not in Ready state.");
    const vm = volumeHolder(call.api, volume);
    if (vm && displayState(vm) !== "Stopped")
      throw new ApiError(
        ERROR.PARAM,
        `The VM the specified disk is attached to is not in the shutdown state. (VM ${vm.metadata.name} is ${displayState(vm)}: stop it first)`,
      );
    const job = await submitJob(call, "revertSnapshot", { ...snapshot, kind: SNAPSHOT_KIND });
    try {
      await call.caller.client.mergePatch(
        Resources.volumes,
        volume.metadata.name as string,
        volume.metadata.namespace,
        {
          metadata: {
            annotations: {
              [REVERT_ANNOTATION]: revertRequest(
                snapshot.metadata.name as string,
                job.metadata.uid as string,
              ),
            },
          },
        },
      );
    } catch (error) {
      // Nobody will carry out this revert: its job must not wait for ever.
      await call.api.client
        .delete(Resources.asyncJobs, job.metadata.name as string, job.metadata.namespace)
        .catch(() => undefined);
      throw error;
    }
    return { jobid: job.metadata.uid as string };
  },
  outcome(job, api) {
    const snapshot = jobObject(api.volumeSnapshots, job, job.spec.target?.uid);
    if (!snapshot) return { error: { code: ERROR.INTERNAL, text: "the snapshot was deleted" } };
    const volume = api.volume(snapshot.metadata.namespace as string, snapshot.spec.volume);
    if (!volume) return { error: { code: ERROR.INTERNAL, text: "the volume was deleted" } };
    const request = revertRequest(snapshot.metadata.name as string, job.metadata.uid as string);
    // Only the agent's report ends it: the annotation may not be in this cache yet when the job is.
    if (volume.status?.revertedTo === request) return { result: { snapshot: snapshotView(snapshot, api) } };
    return undefined;
  },
};

const listSnapshots: Command = {
  async handler(call) {
    const { params, api } = call;
    const volumeId = params.uuid("volumeid");
    const zoneId = params.uuid("zoneid");
    const type = snapshotTypeFilter(params.get("snapshottype"));
    const interval = params.get("intervaltype")?.toUpperCase();
    const snapshots = filtered(call, await namespaced(call, api.volumeSnapshots, Resources.volumeSnapshots))
      .filter((s) => {
        const { snapshottype, intervaltype } = snapshotType(s, api);
        return !type || type === snapshottype || (snapshottype === "RECURRING" && type === intervaltype);
      })
      .filter((s) => !interval || snapshotType(s, api).intervaltype === interval)
      .map((s) => snapshotView(s, api) as Record<string, Json>)
      .filter((s) => !volumeId || s.volumeid === volumeId)
      .filter((s) => !zoneId || s.zoneid === zoneId);
    return page(call, "snapshot", snapshots);
  },
};

const createSnapshotPolicy: Command = {
  async handler(call) {
    const { params } = call;
    const volume = await ownedById(call, call.api.volumes, Resources.volumes, "volumeid");
    requireReadyVolume(volume);
    const interval = intervalType(params.required("intervaltype"));
    const schedule = params.required("schedule").trim();
    const timezone = timeZone(params.required("timezone"));
    params.required("maxsnaps");
    const keep = maxSnapshots(params.integer("maxsnaps") as number, interval);
    const name = policyName(volume.metadata.name as string, interval);
    const spec = {
      volume: volume.metadata.name as string,
      intervalType: interval,
      schedule,
      timezone,
      maxSnapshots: keep,
    };
    const client = call.caller.client;
    const namespace = volume.metadata.namespace as string;
    // CloudStack keeps one policy per volume and interval: asking again updates it.
    const policy = await client
      .create<SnapshotPolicy>(Resources.snapshotPolicies, {
        apiVersion: "stratus.io/v1alpha1",
        kind: "SnapshotPolicy",
        metadata: { name, namespace, annotations: { "stratus.io/created-by": "cloudstack-api" } },
        spec,
      })
      .catch((error) => {
        if (!isAlreadyExists(error)) throw error;
        return client.mergePatch<SnapshotPolicy>(Resources.snapshotPolicies, name, namespace, { spec });
      })
      .catch((error) => {
        throw invalidPolicy(error, schedule, interval);
      });
    return { snapshotpolicy: snapshotPolicyView(policy, call.api) };
  },
};

const listSnapshotPolicies: Command = {
  async handler(call) {
    const { api } = call;
    const volumeId = call.params.uuid("volumeid");
    const policies = filtered(call, await namespaced(call, api.snapshotPolicies, Resources.snapshotPolicies))
      .map((p) => snapshotPolicyView(p, api) as Record<string, Json>)
      .filter((p) => !volumeId || p.volumeid === volumeId)
      .filter((p) => !call.params.get("fordisplay") || p.fordisplay === call.params.flag("fordisplay"));
    return page(call, "snapshotpolicy", policies);
  },
};

const deleteSnapshotPolicies: Command = {
  async handler(call) {
    const ids = [call.params.get("id"), ...call.params.list("ids")].filter((id): id is string => Boolean(id));
    if (ids.length === 0) throw new ApiError(ERROR.PARAM, "No policy id (or list of ids) specified.");
    if (ids.length > MAX_POLICY_IDS)
      throw new ApiError(ERROR.PARAM, `Invalid parameter ids: at most ${MAX_POLICY_IDS} policies at once`);
    const policies: SnapshotPolicy[] = [];
    for (const id of new Set(ids.map((i) => i.toLowerCase()))) {
      policies.push(await ownedByUid(call, call.api.snapshotPolicies, Resources.snapshotPolicies, "id", id));
    }
    for (const policy of policies)
      await call.caller.client
        .delete(Resources.snapshotPolicies, policy.metadata.name as string, policy.metadata.namespace)
        .catch((error) => {
          if (!isNotFound(error)) throw error;
        });
    return { success: true };
  },
};

/** CloudStack's updateSnapshotPolicy changes only whether the policy is shown (and its custom id). */
const updateSnapshotPolicy: Command = {
  async handler(call) {
    const policy = await ownedById(call, call.api.snapshotPolicies, Resources.snapshotPolicies);
    if (call.params.get("customid"))
      throw new ApiError(
        ERROR.PARAM,
        "updateSnapshotPolicy: parameter customid is not supported: a Stratus id is the object's UID and never changes",
      );
    const forDisplay = call.params.get("fordisplay");
    // Boolean.valueOf, as CloudStack parses it: anything but "true" hides the policy.
    const hide = forDisplay === undefined ? undefined : forDisplay.toLowerCase() === "true" ? null : "false";
    const updated = await patched(
      call,
      Resources.snapshotPolicies,
      policy,
      hide === undefined ? undefined : { metadata: { annotations: { [FOR_DISPLAY_ANNOTATION]: hide } } },
    );
    return { snapshotpolicy: snapshotPolicyView(updated, call.api) };
  },
};

export const SNAPSHOT_COMMANDS: Record<string, Command> = {
  updateSnapshotPolicy,
  createSnapshot,
  listSnapshots,
  deleteSnapshot,
  revertSnapshot,
  createSnapshotPolicy,
  listSnapshotPolicies,
  deleteSnapshotPolicies,
};
