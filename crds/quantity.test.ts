import { describe, expect, it } from "vitest";
import { formatQuantity, parseQuantity } from "./quantity.ts";

describe("quantities", () => {
  it.each([
    ["512Mi", 512n * 2n ** 20n],
    ["20Gi", 20n * 2n ** 30n],
    ["1.5Gi", 3n * 2n ** 29n],
    ["1G", 10n ** 9n],
    ["100k", 100_000n],
    ["1024", 1024n],
    ["0.5", 1n],
  ])("parses %s", (text, bytes) => {
    expect(parseQuantity(text)).toBe(bytes);
  });

  it("refuses what is not a quantity", () => {
    expect(() => parseQuantity("lots")).toThrow('"lots" is not a quantity such as 512Mi or 20Gi');
    expect(() => parseQuantity("-1Gi")).toThrow();
  });

  it.each([
    [16n * 2n ** 30n, "16Gi"],
    [1536n * 2n ** 20n, "1536Mi"],
    [0n, "0"],
    [1000n, "1000"],
  ])("formats %s as %s", (bytes, text) => {
    expect(formatQuantity(bytes)).toBe(text);
  });
});
