// AgentWrites kept in memory for unit tests: statuses apply onto the test's objects (as the API
// server would), and every write is counted, so a test can say "a start costs two writes".
import type { VirtualMachine, Volume } from "../../crds/index.ts";
import type { KubeObject, ResourceType } from "../../runtime/client.ts";
import { statusSays } from "../../runtime/objects.ts";
import type { AgentEvent, AgentWrites, ObjectRef } from "../agent-writes.ts";

export class MemoryWrites implements AgentWrites {
  readonly writes: string[] = [];
  readonly events: AgentEvent[] = [];
  readonly volumeStatuses = new Map<string, Record<string, unknown>>();
  private readonly vms: Map<string, VirtualMachine>;

  constructor(vms: Map<string, VirtualMachine>) {
    this.vms = vms;
  }

  async vmStatus(vm: VirtualMachine, status: Record<string, unknown>): Promise<boolean> {
    if (statusSays(status, (vm.status ?? {}) as Record<string, unknown>)) return false;
    const key = `${vm.metadata.namespace}/${vm.metadata.name}`;
    this.writes.push(`vm ${key}`);
    const current = this.vms.get(key) ?? vm;
    // Server-side apply: the agent's fields replace its earlier ones; others' conditions stay.
    const mine = new Set((status.conditions as { type: string }[] | undefined)?.map((c) => c.type));
    const conditions = [
      ...(current.status?.conditions ?? []).filter((c) => !mine.has(c.type)),
      ...((status.conditions as NonNullable<VirtualMachine["status"]>["conditions"]) ?? []),
    ];
    const { evacuatedFrom: _dropped, ...kept } = current.status ?? {};
    this.vms.set(key, {
      ...current,
      status: { ...kept, ...status, conditions } as NonNullable<VirtualMachine["status"]>,
    });
    return true;
  }

  async volumeStatus(ref: ObjectRef, current: Volume | undefined, status: Record<string, unknown>) {
    const key = `${ref.namespace}/${ref.name}`;
    const known = (current?.status as Record<string, unknown> | undefined) ?? this.volumeStatuses.get(key);
    if (known && statusSays(status, known)) return "same" as const;
    this.writes.push(`volume ${key}`);
    this.volumeStatuses.set(key, status);
    return "wrote" as const;
  }

  readonly transfers = new Map<string, Record<string, unknown>>();

  /** The resourceVersion each transfer write was made on, when it named one. */
  readonly transferVersions = new Map<string, string>();

  async volumeTransfer(ref: ObjectRef, transfer: Record<string, unknown>, onVersion?: string): Promise<void> {
    const key = `${ref.namespace}/${ref.name}`;
    this.writes.push(`transfer ${key}`);
    this.transfers.set(key, transfer);
    if (onVersion) this.transferVersions.set(key, onVersion);
    else this.transferVersions.delete(key);
  }

  readonly snapshotStatuses = new Map<string, Record<string, unknown>>();
  readonly reverts = new Map<string, string>();

  async snapshotStatus(ref: ObjectRef, status: Record<string, unknown>): Promise<void> {
    const key = `${ref.namespace}/${ref.name}`;
    this.writes.push(`snapshot ${key}`);
    this.snapshotStatuses.set(key, status);
  }

  readonly templateImages = new Map<string, Record<string, unknown>>();

  async templateImage(name: string, status: Record<string, unknown>): Promise<void> {
    this.writes.push(`template ${name}`);
    this.templateImages.set(name, status);
  }

  /** Each zone image write, `<template>/<zone>` -> the fields, in order. */
  readonly zoneImages: [string, Record<string, unknown>][] = [];

  async zoneImage(name: string, zone: string, fields: Record<string, unknown>): Promise<void> {
    this.writes.push(`zone image ${name}/${zone}`);
    this.zoneImages.push([`${name}/${zone}`, fields]);
  }

  async volumeReverted(ref: ObjectRef, request: string): Promise<void> {
    const key = `${ref.namespace}/${ref.name}`;
    this.writes.push(`reverted ${key}`);
    this.reverts.set(key, request);
  }

  async removeFinalizer(type: ResourceType, object: KubeObject, finalizer: string): Promise<boolean> {
    if (!object.metadata.finalizers?.includes(finalizer)) return false;
    this.writes.push(`finalizer ${type.plural}/${object.metadata.namespace}/${object.metadata.name}`);
    return true;
  }

  async event(_type: ResourceType, _object: KubeObject, event: AgentEvent): Promise<void> {
    this.events.push(event);
  }
}
