import { describe, expect, it } from "vitest";
import { histogramQuantile, summarize } from "./stats.ts";

describe("summaries", () => {
  it("takes nearest-rank percentiles", () => {
    const samples = Array.from({ length: 100 }, (_, i) => i + 1).reverse();
    expect(summarize(samples)).toMatchObject({ count: 100, p50: 50, p95: 95, p99: 99, max: 100, mean: 50.5 });
    expect(summarize([7])).toMatchObject({ p50: 7, p99: 7 });
    expect(summarize([]).p50).toBeNaN();
  });

  it("interpolates a quantile inside its bucket, as histogram_quantile does", () => {
    const buckets = new Map([
      [0.1, 50],
      [1, 90],
      [10, 100],
      [Number.POSITIVE_INFINITY, 100],
    ]);
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.1);
    expect(histogramQuantile(0.7, buckets)).toBeCloseTo(0.1 + 0.9 * (20 / 40));
    expect(histogramQuantile(0.99, buckets)).toBeCloseTo(1 + 9 * (9 / 10));
    expect(histogramQuantile(0.5, new Map([[Number.POSITIVE_INFINITY, 0]]))).toBeNaN();
    // Observations above every finite bound: the highest finite bound, as Prometheus answers.
    expect(
      histogramQuantile(
        0.99,
        new Map([
          [1, 0],
          [Number.POSITIVE_INFINITY, 5],
        ]),
      ),
    ).toBe(1);
  });
});
