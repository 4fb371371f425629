// Everything the host agent writes to the API server, behind one small interface so the reconcile
// loop's unit tests can count and inspect writes without an API server. Status goes through
// server-side apply with the field manager all agents share (`stratus-host-agent`): when a VM
// moves, the next host's agent takes over the same fields instead of fighting over them.
import { Resources, type VirtualMachine, type Volume } from "../crds/index.ts";
import { isNotFound, type KubeClient, type KubeObject, type ResourceType } from "../runtime/client.ts";
import type { EventRecorder } from "../runtime/events.ts";
import { isSubset, removeFinalizer, statusSays } from "../runtime/objects.ts";

export const AGENT_FIELD_MANAGER = "stratus-host-agent";
/**
 * The copy steps of a volume move (status.transfer.exported and .received) have a manager of their
 * own: the two agents of a move each write them without touching where the disk is (host, pool, path).
 */
export const TRANSFER_FIELD_MANAGER = "stratus-host-agent-transfer";
/** A Volume's `status.revertedTo`: apart, so the agent's other Volume fields never drop it. */
export const REVERT_FIELD_MANAGER = "stratus-host-agent-revert";
/** A Template's `status.image` (and Ready): written once, by the agent that made the image. */
export const TEMPLATE_FIELD_MANAGER = "stratus-host-agent-template";
/**
 * A zone's entry of a Template's `status.zones`: one manager per zone, shared by that zone's agents
 * (the host storage chose may change), so one zone's report never drops another zone's.
 */
export const zoneImageFieldManager = (zone: string) => `stratus-host-agent-template-${zone}`;

export interface ObjectRef {
  namespace: string;
  name: string;
}

export type AgentEvent = { type: "Normal" | "Warning"; reason: string; action: string; note: string };

export interface AgentWrites {
  /** Applies the agent's part of a VM's status unless it already says that; returns whether it wrote. */
  vmStatus(vm: VirtualMachine, status: Record<string, unknown>): Promise<boolean>;
  /**
   * Applies the agent's part of a Volume's status. `current` is the cached object when the agent
   * has one. Returns "gone" when the Volume no longer exists.
   */
  volumeStatus(
    ref: ObjectRef,
    current: Volume | undefined,
    status: Record<string, unknown>,
  ): Promise<"wrote" | "same" | "gone">;
  /**
   * Applies the copy steps of a move (`exported`, `received`); an empty object clears them. The
   * apply replaces both, so a writer passes on the one it does not change. `onVersion`: only on
   * that resourceVersion of the Volume (a conflict otherwise).
   */
  volumeTransfer(ref: ObjectRef, transfer: Record<string, unknown>, onVersion?: string): Promise<void>;
  /** Applies the agent's part of a VolumeSnapshot's status (phase, file, checksum, Ready). */
  snapshotStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void>;
  /** Applies a Template's image made from a volume or snapshot (cluster-scoped: no namespace). */
  templateImage(name: string, status: Record<string, unknown>): Promise<void>;
  /** Applies the agent's fields of a Template's image in a zone (state, bytes, checksum, message). */
  zoneImage(name: string, zone: string, fields: Record<string, unknown>): Promise<void>;
  /** Records that the Volume's disk was reverted as `request` asked. */
  volumeReverted(ref: ObjectRef, request: string): Promise<void>;
  /** Removes a finalizer; false when it was not there. */
  removeFinalizer(type: ResourceType, object: KubeObject, finalizer: string): Promise<boolean>;
  event(type: ResourceType, object: KubeObject, event: AgentEvent): Promise<void>;
}

export class KubeAgentWrites implements AgentWrites {
  private readonly client: KubeClient;
  private readonly events: EventRecorder;
  /** What this agent last applied to each Volume: its cache may not show its own write yet. */
  private readonly applied = new Map<string, Record<string, unknown>>();

  constructor(client: KubeClient, events: EventRecorder) {
    this.client = client;
    this.events = events;
  }

  async vmStatus(vm: VirtualMachine, status: Record<string, unknown>): Promise<boolean> {
    if (statusSays(status, (vm.status ?? {}) as Record<string, unknown>)) return false;
    await this.apply(Resources.virtualMachines, vm.metadata as ObjectRef, status);
    return true;
  }

  async volumeStatus(ref: ObjectRef, current: Volume | undefined, status: Record<string, unknown>) {
    const key = `${ref.namespace}/${ref.name}`;
    const said = current ? statusSays(status, (current.status ?? {}) as Record<string, unknown>) : false;
    const last = this.applied.get(key);
    if (said || (!current && last && isSubset(status, last) && isSubset(last, status)))
      return "same" as const;
    try {
      await this.apply(Resources.volumes, ref, status);
    } catch (error) {
      if (isNotFound(error)) {
        this.applied.delete(key);
        return "gone" as const;
      }
      throw error;
    }
    this.applied.set(key, status);
    if (this.applied.size > 50_000) this.applied.clear(); // a bound, not a cache worth keeping
    return "wrote" as const;
  }

  async volumeTransfer(ref: ObjectRef, transfer: Record<string, unknown>, onVersion?: string): Promise<void> {
    await this.client.apply(
      Resources.volumes,
      // Clearing applies no transfer at all: an empty `transfer: {}` would become null, which the schema refuses.
      {
        metadata: {
          name: ref.name,
          namespace: ref.namespace,
          ...(onVersion ? { resourceVersion: onVersion } : {}),
        },
        status: Object.keys(transfer).length > 0 ? { transfer } : {},
      },
      { fieldManager: TRANSFER_FIELD_MANAGER, subresource: "status" },
    );
  }

  async snapshotStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void> {
    await this.apply(Resources.volumeSnapshots, ref, status);
  }

  async templateImage(name: string, status: Record<string, unknown>): Promise<void> {
    await this.client.apply(
      Resources.templates,
      { metadata: { name }, status },
      { fieldManager: TEMPLATE_FIELD_MANAGER, subresource: "status" },
    );
  }

  async zoneImage(name: string, zone: string, fields: Record<string, unknown>): Promise<void> {
    await this.client.apply(
      Resources.templates,
      { metadata: { name }, status: { zones: [{ zone, ...fields }] } },
      { fieldManager: zoneImageFieldManager(zone), subresource: "status" },
    );
  }

  async volumeReverted(ref: ObjectRef, request: string): Promise<void> {
    await this.client.apply(
      Resources.volumes,
      { metadata: { name: ref.name, namespace: ref.namespace }, status: { revertedTo: request } },
      { fieldManager: REVERT_FIELD_MANAGER, subresource: "status" },
    );
  }

  removeFinalizer(type: ResourceType, object: KubeObject, finalizer: string): Promise<boolean> {
    return removeFinalizer(this.client, type, object, finalizer);
  }

  event(type: ResourceType, object: KubeObject, event: AgentEvent): Promise<void> {
    return this.events.record(type, object, event);
  }

  private async apply(type: ResourceType, ref: ObjectRef, status: Record<string, unknown>): Promise<void> {
    await this.client.apply(
      type,
      { metadata: { name: ref.name, namespace: ref.namespace }, status },
      { fieldManager: AGENT_FIELD_MANAGER, subresource: "status" },
    );
  }
}
