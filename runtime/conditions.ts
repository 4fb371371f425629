// Conditions as metav1.Condition defines them: one per type, lastTransitionTime moves only when
// the status changes, and every condition says which generation it was computed from.
import { kubeTime } from "./time.ts";

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export type ConditionInput = Omit<Condition, "lastTransitionTime" | "observedGeneration">;

/** Returns the conditions with `input` set (a new array; the input is not changed). */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  input: ConditionInput,
  observedGeneration: number | undefined,
  now: Date = new Date(),
): Condition[] {
  const existing = conditions?.find((c) => c.type === input.type);
  const next: Condition = {
    ...input,
    ...(observedGeneration !== undefined ? { observedGeneration } : {}),
    lastTransitionTime:
      existing && existing.status === input.status ? existing.lastTransitionTime : kubeTime(now),
  };
  return [...(conditions ?? []).filter((c) => c.type !== input.type), next].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}

/**
 * What one writer applies: `inputs` set on top of the object's current conditions (so unchanged
 * ones keep their transition time), and only those. Server-side apply keeps the other writers'.
 */
export function ownConditions(
  current: readonly Condition[] | undefined,
  observedGeneration: number | undefined,
  inputs: readonly ConditionInput[],
  now: Date = new Date(),
): Condition[] {
  let conditions = current;
  for (const input of inputs) conditions = setCondition(conditions, input, observedGeneration, now);
  return (conditions ?? []).filter((c) => inputs.some((input) => input.type === c.type));
}
