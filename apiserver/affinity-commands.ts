// CloudStack's affinity groups: an AffinityGroup object per group, in the caller's account; a VM
// is a member when its spec.placement.affinityGroups names the group, and the scheduler keeps the
// group's rule. As CloudStack: deleting a group takes it off its VMs first; a VM's groups change
// only while it is stopped; another account's group answers as an unknown id.

import { affinityOf, groupsOf } from "../controllers/scheduler/host-usage.ts";
import { affinityReason, anchoredGroups } from "../controllers/scheduler/placement.ts";
import { displayState } from "../crds/display-state.ts";
import {
  AFFINITY_TYPES,
  type AffinityGroup,
  type AffinityType,
  Resources,
  type VirtualMachine,
} from "../crds/index.ts";
import { isAlreadyExists, isNotFound } from "../runtime/client.ts";
import { affinityGroupView } from "./affinity-views.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, entityNotFound, type Json } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";
import { filtered, namespaced, ownedById, ownedByUid, page, patchFromCurrent } from "./listing.ts";
import { DNS_LABEL } from "./params.ts";
import { virtualMachineView } from "./views.ts";

const GROUP_KIND = "AffinityGroup";
/** The job parameter updateVMAffinityGroup records the VM's new groups in: the job ends when the VM shows them. */
const WANTED_GROUPS = "stratus.affinitygroups";

/** The VMs of the group's account that name it. */
function membersOf(api: CloudStackApi, group: AffinityGroup): VirtualMachine[] {
  return api.vms.byIndex("affinityGroup", `${group.metadata.namespace}/${group.metadata.name}`);
}

function groupAnswer(api: CloudStackApi, group: AffinityGroup): Json {
  return affinityGroupView(
    group,
    membersOf(api, group).map((vm) => vm.metadata.uid as string),
  );
}

/** listVirtualMachines' `affinitygroupid`: the group's members only (431 for an unknown or foreign id). */
export async function groupMembersFilter(call: Call): Promise<(vm: VirtualMachine) => boolean> {
  const id = call.params.uuid("affinitygroupid");
  if (!id) return () => true;
  const group = await ownedByUid(
    call,
    call.api.affinityGroups,
    Resources.affinityGroups,
    "affinitygroupid",
    id,
  );
  const members = new Set(membersOf(call.api, group).map((vm) => vm.metadata.uid));
  return (vm) => members.has(vm.metadata.uid);
}

/**
 * The groups `affinitygroupids` or `affinitygroupnames` name, all in `account` (the VM's), as
 * deployVirtualMachine and updateVMAffinityGroup take them; undefined when neither is given.
 */
export async function requestedGroups(call: Call, account: string): Promise<string[] | undefined> {
  const { params, api } = call;
  const ids = params.list("affinitygroupids");
  const names = params.list("affinitygroupnames");
  if (ids.length > 0 && names.length > 0)
    throw new ApiError(
      ERROR.PARAM,
      "Either affinitygroupids or affinitygroupnames should be specified, not both",
    );
  if (params.get("affinitygroupids") === undefined && params.get("affinitygroupnames") === undefined)
    return undefined;
  const groups: AffinityGroup[] = [];
  for (const id of ids) {
    const group = await ownedByUid(
      call,
      api.affinityGroups,
      Resources.affinityGroups,
      "affinitygroupids",
      id,
    );
    // An administrator reaches other accounts' groups; a VM still joins only its own account's.
    if (group.metadata.namespace !== account)
      throw new ApiError(
        ERROR.ACCOUNT,
        `Affinity group ${group.metadata.name} does not belong to the VM's account ${account}`,
      );
    groups.push(group);
  }
  for (const name of names) {
    const group = api.affinityGroup(account, name);
    if (!group) throw new ApiError(ERROR.PARAM, `Unable to find affinity group ${name}`);
    groups.push(group);
  }
  return [...new Set(groups.map((g) => g.metadata.name as string))];
}

/** Sets the VM's groups from its current version; a VM deleted meanwhile has none to change. */
async function setGroups(call: Call, vm: VirtualMachine, change: (current: string[]) => string[]) {
  await patchFromCurrent(call, Resources.virtualMachines, vm, (current) => ({
    spec: { placement: { affinityGroups: change(current.spec.placement?.affinityGroups ?? []) } },
  })).catch((error: unknown) => {
    if (!isNotFound(error)) throw error;
  });
}

/** The group deleteAffinityGroup means: by id anywhere the caller reaches, or by name in its account. */
async function groupToDelete(call: Call): Promise<AffinityGroup> {
  const { params, api } = call;
  refuseOtherAccount(call);
  if (params.get("id") !== undefined) return ownedById(call, api.affinityGroups, Resources.affinityGroups);
  const name = params.get("name");
  if (!name)
    throw new ApiError(
      ERROR.PARAM,
      "Either the affinity group Id or group name must be specified to delete the group",
    );
  const group = api.affinityGroup(call.caller.account, name);
  if (!group) throw new ApiError(ERROR.PARAM, `Unable to find affinity group ${name}`);
  return group;
}

/**
 * A stopped VM keeps its host (its disks may be there): new groups whose rule that host breaks
 * would be ignored at the next start, so they are refused now, saying which host and why.
 */
function refuseConflictOnHost(api: CloudStackApi, vm: VirtualMachine, groups: string[]): void {
  const host = vm.status?.host;
  if (!host) return;
  const named = { ...vm, spec: { ...vm.spec, placement: { ...vm.spec.placement, affinityGroups: groups } } };
  const affinity = affinityOf(
    named,
    (name) => api.affinityGroup(vm.metadata.namespace as string, name)?.spec.type,
  );
  const demand = { zone: vm.spec.zone, cpu: 0, memoryBytes: 0n, hostTags: [], ...affinity };
  const groupsByHost = new Map<string, Set<string>>();
  for (const other of api.vms.list()) {
    const at = other.status?.host;
    if (!at || other.metadata.uid === vm.metadata.uid) continue;
    const set = groupsByHost.get(at) ?? new Set<string>();
    for (const group of groupsOf(other)) set.add(group);
    groupsByHost.set(at, set);
  }
  const anchored = anchoredGroups(
    demand,
    [...groupsByHost.values()].map((set) => ({ groups: set })),
  );
  const reason = affinityReason(demand, groupsByHost.get(host) ?? new Set(), anchored);
  if (reason)
    throw new ApiError(
      ERROR.PARAM,
      `Unable to update affinity groups of the virtual machine ${vm.metadata.name}: it stays on host ${host} while stopped, which its new groups refuse (${reason})`,
    );
}

/**
 * `account` names where to act: Stratus makes (or finds by name) a group only in the caller's own
 * account. There are no projects, so any `projectid` is an unknown id; all is in the ROOT domain.
 */
function refuseOtherAccount(call: Call): void {
  const account = call.params.get("account");
  if (account !== undefined && account !== call.caller.account)
    throw new ApiError(
      ERROR.PARAM,
      `Parameter account is not supported: affinity groups are made in the caller's account (${call.caller.account})`,
    );
  const project = call.params.get("projectid");
  if (project) throw entityNotFound("projectid", project);
}

export const AFFINITY_COMMANDS: Record<string, Command> = {
  listAffinityGroupTypes: {
    async handler(call) {
      const keyword = call.params.get("keyword")?.toLowerCase();
      const types = AFFINITY_TYPES.filter((type) => !keyword || type.includes(keyword)).map((type) => ({
        type,
      }));
      return page(call, "affinitygrouptype", types);
    },
  },
  createAffinityGroup: {
    async: true,
    async handler(call) {
      const { params } = call;
      const name = params.required("name");
      const type = params.required("type");
      refuseOtherAccount(call);
      if (!(AFFINITY_TYPES as readonly string[]).includes(type))
        throw new ApiError(
          ERROR.PARAM,
          `Unable to create affinity group, invalid affinity group type: ${type}. Valid values are ${AFFINITY_TYPES.join(",")}`,
        );
      if (!DNS_LABEL.test(name) || name.length > 63)
        throw new ApiError(
          ERROR.PARAM,
          `Invalid parameter name value=${name}: an affinity group name is lower-case letters, digits and hyphens (at most 63)`,
        );
      const description = params.get("description");
      const group = await call.caller.client
        .create<AffinityGroup>(Resources.affinityGroups, {
          apiVersion: "stratus.io/v1alpha1",
          kind: GROUP_KIND,
          metadata: { name, namespace: call.caller.account },
          spec: { type: type as AffinityType, ...(description ? { description } : {}) },
        })
        .catch((error: unknown) => {
          if (isAlreadyExists(error))
            throw new ApiError(
              ERROR.PARAM,
              `Unable to create affinity group, a group with name ${name} already exists.`,
            );
          throw error;
        });
      const job = await submitJob(call, "createAffinityGroup", { ...group, kind: GROUP_KIND });
      return { id: group.metadata.uid as string, jobid: job.metadata.uid as string };
    },
    outcome(job, api) {
      const group = jobObject(api.affinityGroups, job, job.spec.target?.uid);
      return group ? { result: { affinitygroup: groupAnswer(api, group) } } : undefined;
    },
  },
  listAffinityGroups: {
    async handler(call) {
      const { params, api } = call;
      const type = params.get("type");
      const vmId = params.uuid("virtualmachineid");
      const vm = vmId
        ? await ownedByUid(call, api.vms, Resources.virtualMachines, "virtualmachineid", vmId)
        : undefined;
      const groups = filtered(call, await namespaced(call, api.affinityGroups, Resources.affinityGroups))
        .filter((g) => !type || g.spec.type === type)
        .filter(
          (g) =>
            !vm ||
            (g.metadata.namespace === vm.metadata.namespace &&
              (vm.spec.placement?.affinityGroups ?? []).includes(g.metadata.name as string)),
        );
      return page(
        call,
        "affinitygroup",
        groups.map((g) => groupAnswer(api, g)),
      );
    },
  },
  deleteAffinityGroup: {
    async: true,
    async handler(call) {
      const group = await groupToDelete(call);
      const name = group.metadata.name as string;
      // As CloudStack: the group's memberships go with it, then the group.
      for (const vm of membersOf(call.api, group))
        await setGroups(call, vm, (current) => current.filter((g) => g !== name));
      const job = await submitJob(call, "deleteAffinityGroup", { ...group, kind: GROUP_KIND });
      await call.caller.client
        .delete(Resources.affinityGroups, name, group.metadata.namespace)
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      return { jobid: job.metadata.uid as string };
    },
    outcome(job, api) {
      return jobObject(api.affinityGroups, job, job.spec.target?.uid)
        ? undefined
        : { result: { success: true } };
    },
  },
  updateVMAffinityGroup: {
    async: true,
    async handler(call) {
      const vm = await ownedById(call, call.api.vms, Resources.virtualMachines);
      const groups = (await requestedGroups(call, vm.metadata.namespace as string)) ?? [];
      const state = displayState(vm);
      if (state !== "Stopped")
        throw new ApiError(
          ERROR.PARAM,
          `Unable update affinity groups of the virtual machine ${vm.metadata.name} in state ${state}; make sure the virtual machine is stopped and not in an error state before updating.`,
        );
      refuseConflictOnHost(call.api, vm, groups);
      await setGroups(call, vm, () => groups);
      const job = await submitJob(call, "updateVMAffinityGroup", vm, { [WANTED_GROUPS]: groups.join(",") });
      return { jobid: job.metadata.uid as string };
    },
    outcome(job, api) {
      const vm = jobObject(api.vms, job, job.spec.target?.uid);
      if (!vm) return { error: { code: ERROR.INTERNAL, text: "the virtual machine was deleted" } };
      const shown = (vm.spec.placement?.affinityGroups ?? []).join(",");
      return shown === job.spec.parameters?.[WANTED_GROUPS]
        ? { result: { virtualmachine: virtualMachineView(vm, api) } }
        : undefined;
    },
  },
};
