import { describe, expect, it } from "vitest";
import { isSubset } from "./objects.ts";

describe("isSubset (status written only when it changed)", () => {
  it.each([
    [{ a: 1 }, { a: 1, b: 2 }, true],
    [{ a: 1 }, { a: 2 }, false],
    [{ a: { b: [1, 2] } }, { a: { b: [1, 2], c: 3 } }, true],
    [{ a: [1, 2] }, { a: [1, 2, 3] }, false],
    [{ a: [{ x: 1 }] }, { a: [{ x: 1, y: 2 }] }, false], // list items must match whole
    [{ a: undefined }, {}, true],
    [{ a: "1" }, { a: 1 }, false],
    [{}, undefined, false],
  ])("%j within %j: %s", (desired, actual, expected) => {
    expect(isSubset(desired, actual)).toBe(expected);
  });
});
