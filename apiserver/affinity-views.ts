// Pure: an AffinityGroup as CloudStack shows it; inside a VM's view without its members' ids.
import type { AffinityGroup } from "../crds/index.ts";
import { compact, type Json } from "./envelope.ts";

export function affinityGroupView(group: AffinityGroup, memberIds?: string[]): Json {
  return compact({
    id: group.metadata.uid as string,
    name: group.metadata.name as string,
    type: group.spec.type,
    description: group.spec.description,
    account: group.metadata.namespace as string,
    domain: "ROOT",
    virtualmachineIds: memberIds,
  });
}
