// SVG plots of a benchmark run, drawn with Vega-Lite (headless: no browser, no canvas).
import * as vega from "vega";
import * as vegaLite from "vega-lite";

async function render(spec: vegaLite.TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: "none" });
  return view.toSVG();
}

/** Cumulative distributions of several latency series (seconds), one line each. */
export function latencyDistribution(
  title: string,
  series: Record<string, readonly number[]>,
): Promise<string> {
  const values = Object.entries(series).flatMap(([name, samples]) => {
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted.map((seconds, i) => ({ series: name, seconds, fraction: (i + 1) / sorted.length }));
  });
  return render({
    title,
    width: 640,
    height: 320,
    data: { values },
    mark: { type: "line", interpolate: "step-after" },
    encoding: {
      x: { field: "seconds", type: "quantitative", scale: { type: "log" }, title: "latency (s, log scale)" },
      y: { field: "fraction", type: "quantitative", title: "fraction of requests at or below" },
      color: { field: "series", type: "nominal", title: null },
    },
  });
}

/** Events per second over the run, one line per series (e.g. VMs created, VMs Running). */
export function throughputOverTime(
  title: string,
  series: Record<string, readonly number[]>,
): Promise<string> {
  const values = Object.entries(series).flatMap(([name, perSecond]) =>
    perSecond.map((count, second) => ({ series: name, second, count })),
  );
  return render({
    title,
    width: 640,
    height: 320,
    data: { values },
    mark: "line",
    encoding: {
      x: { field: "second", type: "quantitative", title: "seconds since the first create" },
      y: { field: "count", type: "quantitative", title: "per second" },
      color: { field: "series", type: "nominal", title: null },
    },
  });
}

/** Counts per second of timestamps (ms, relative to `start`). */
export function perSecond(timestampsMs: readonly number[], startMs: number): number[] {
  const counts: number[] = [];
  for (const t of timestampsMs) {
    const second = Math.max(0, Math.floor((t - startMs) / 1000));
    while (counts.length <= second) counts.push(0);
    counts[second] = (counts[second] as number) + 1;
  }
  return counts;
}
