import { describe, expect, it } from "vitest";
import { type Condition, findCondition, isConditionTrue, ownConditions, setCondition } from "./conditions.ts";

const T1 = new Date("2026-11-25T10:00:00Z");
const T2 = new Date("2026-11-25T11:00:00Z");

describe("conditions", () => {
  it("adds a condition with the generation it was computed from", () => {
    expect(
      setCondition(
        undefined,
        { type: "Ready", status: "False", reason: "Pending", message: "waiting" },
        4,
        T1,
      ),
    ).toEqual([
      {
        type: "Ready",
        status: "False",
        reason: "Pending",
        message: "waiting",
        observedGeneration: 4,
        lastTransitionTime: "2026-11-25T10:00:00Z",
      },
    ]);
  });

  it("moves lastTransitionTime only when the status changes", () => {
    const first = setCondition([], { type: "Ready", status: "False", reason: "A", message: "a" }, 1, T1);
    const sameStatus = setCondition(
      first,
      { type: "Ready", status: "False", reason: "B", message: "b" },
      2,
      T2,
    );
    expect(sameStatus[0]).toMatchObject({
      reason: "B",
      observedGeneration: 2,
      lastTransitionTime: "2026-11-25T10:00:00Z",
    });
    const flipped = setCondition(
      sameStatus,
      { type: "Ready", status: "True", reason: "C", message: "c" },
      2,
      T2,
    );
    expect(flipped[0]?.lastTransitionTime).toBe("2026-11-25T11:00:00Z");
  });

  it("keeps one condition per type, in a stable order, without touching the input", () => {
    const input: Condition[] = setCondition(
      [],
      { type: "Scheduled", status: "True", reason: "S", message: "" },
      1,
      T1,
    );
    const output = setCondition(input, { type: "Ready", status: "True", reason: "R", message: "" }, 1, T1);
    expect(output.map((c) => c.type)).toEqual(["Ready", "Scheduled"]);
    expect(input).toHaveLength(1);
    expect(isConditionTrue(output, "Ready")).toBe(true);
    expect(findCondition(output, "Missing")).toBeUndefined();
  });
});

describe("ownConditions", () => {
  it("returns only the writer's conditions, keeping unchanged transition times", () => {
    const current = [
      {
        type: "Ready",
        status: "True" as const,
        reason: "R",
        message: "",
        lastTransitionTime: "2026-01-01T00:00:00Z",
      },
      {
        type: "Scheduled",
        status: "True" as const,
        reason: "S",
        message: "",
        lastTransitionTime: "2026-01-02T00:00:00Z",
      },
    ];
    const mine = ownConditions(current, 4, [{ type: "Ready", status: "True", reason: "R2", message: "m" }]);
    expect(mine).toEqual([
      {
        type: "Ready",
        status: "True",
        reason: "R2",
        message: "m",
        observedGeneration: 4,
        lastTransitionTime: "2026-01-01T00:00:00Z",
      },
    ]);
  });
});
