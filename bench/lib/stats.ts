// Percentiles and summaries of samples, and quantiles from Prometheus histogram buckets.

export interface Summary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of already sorted samples. */
function rank(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: rank(sorted, 50),
    p95: rank(sorted, 95),
    p99: rank(sorted, 99),
    max: sorted.at(-1) ?? Number.NaN,
    mean: sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : Number.NaN,
  };
}

/** A cumulative histogram: upper bound → count of observations at or below it (+Inf included). */
export type Buckets = Map<number, number>;

/**
 * The q-quantile (0..1) of a cumulative histogram, interpolated linearly inside the bucket that
 * holds it, as Prometheus' histogram_quantile does; NaN without observations.
 */
export function histogramQuantile(q: number, buckets: Buckets): number {
  const bounds = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Number.POSITIVE_INFINITY) ?? 0;
  if (total === 0) return Number.NaN;
  const target = q * total;
  let previousBound = 0;
  let previousCount = 0;
  for (const bound of bounds) {
    const count = buckets.get(bound) as number;
    if (count >= target) {
      if (bound === Number.POSITIVE_INFINITY) return previousBound; // the highest finite bound
      const inBucket = count - previousCount;
      return inBucket === 0
        ? bound
        : previousBound + (bound - previousBound) * ((target - previousCount) / inBucket);
    }
    previousBound = bound;
    previousCount = count;
  }
  return previousBound;
}
