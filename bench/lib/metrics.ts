// Reads Prometheus text exposition (kube-apiserver's and the Stratus processes' /metrics) into
// counters and histograms a benchmark can subtract: the value after a phase minus the value before.
import type { Buckets } from "./stats.ts";

type Labels = Record<string, string>;
interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/**
 * The samples of a text exposition (the subset of the format these servers write). Written here:
 * parse-prometheus-text-format, the npm parser, drops the labels of histogram series.
 */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels: Labels = {};
    for (const [, key, value] of (match[2] ?? "").matchAll(LABEL))
      labels[key as string] = (value as string).replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    samples.push({ name: match[1] as string, labels, value: Number(match[3]) });
  }
  return samples;
}

export class MetricsSnapshot {
  private readonly samples: Sample[];

  constructor(text: string) {
    this.samples = parseExposition(text);
  }

  /** A counter or gauge summed per key (`key` of each series' labels); series it returns undefined for are left out. */
  sum(name: string, key: (labels: Labels) => string | undefined = () => ""): Map<string, number> {
    const totals = new Map<string, number>();
    for (const sample of this.samples) {
      if (sample.name !== name) continue;
      const k = key(sample.labels);
      if (k !== undefined) totals.set(k, (totals.get(k) ?? 0) + sample.value);
    }
    return totals;
  }

  /** A histogram's cumulative buckets, summed over the series `include` accepts. */
  histogram(name: string, include: (labels: Labels) => boolean = () => true): Buckets {
    const buckets: Buckets = new Map();
    for (const sample of this.samples) {
      if (sample.name !== `${name}_bucket` || !include(sample.labels)) continue;
      const le = sample.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(sample.labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + sample.value);
    }
    return buckets;
  }
}

/** after − before, per key (keys only in `after` count from zero). */
export function difference(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  const result = new Map<string, number>();
  for (const [key, value] of after) result.set(key, value - (before.get(key) ?? 0));
  return result;
}

export function bucketDifference(after: Buckets, before: Buckets): Buckets {
  const result: Buckets = new Map();
  for (const [bound, count] of after) result.set(bound, count - (before.get(bound) ?? 0));
  return result;
}

/** Buckets summed over several processes (the host agents). */
export function addBuckets(all: Buckets[]): Buckets {
  const result: Buckets = new Map();
  for (const buckets of all)
    for (const [bound, count] of buckets) result.set(bound, (result.get(bound) ?? 0) + count);
  return result;
}

export async function scrape(url: string): Promise<MetricsSnapshot> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  return new MetricsSnapshot(await response.text());
}
