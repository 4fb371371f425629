import { describe, expect, it } from "vitest";
import { bucketDifference, difference, MetricsSnapshot } from "./metrics.ts";
import { histogramQuantile } from "./stats.ts";

const before = new MetricsSnapshot(`# TYPE apiserver_request_total counter
apiserver_request_total{verb="POST",resource="virtualmachines",subresource="",code="201"} 10
apiserver_request_total{verb="APPLY",resource="virtualmachines",subresource="status",code="200"} 4
# TYPE q histogram
q_bucket{controller="a",le="0.1"} 1
q_bucket{controller="a",le="1"} 2
q_bucket{controller="a",le="+Inf"} 2
q_sum{controller="a"} 0.5
q_count{controller="a"} 2
`);
const after = new MetricsSnapshot(`# TYPE apiserver_request_total counter
apiserver_request_total{verb="POST",resource="virtualmachines",subresource="",code="201"} 30
apiserver_request_total{verb="POST",resource="virtualmachines",subresource="",code="409"} 2
apiserver_request_total{verb="APPLY",resource="virtualmachines",subresource="status",code="200"} 44
apiserver_request_total{verb="GET",resource="hosts",subresource="",code="200"} 7
# TYPE q histogram
q_bucket{controller="a",le="0.1"} 1
q_bucket{controller="a",le="1"} 12
q_bucket{controller="a",le="+Inf"} 12
q_sum{controller="a"} 5
q_count{controller="a"} 12
q_bucket{controller="b",le="0.1"} 100
q_bucket{controller="b",le="1"} 100
q_bucket{controller="b",le="+Inf"} 100
q_sum{controller="b"} 1
q_count{controller="b"} 100
`);

describe("metrics snapshots", () => {
  it("subtracts request counters per verb and resource", () => {
    const key = (l: Record<string, string>) =>
      `${l.verb} ${l.resource}${l.subresource ? `/${l.subresource}` : ""}`;
    const requests = difference(
      after.sum("apiserver_request_total", key),
      before.sum("apiserver_request_total", key),
    );
    expect(Object.fromEntries(requests)).toEqual({
      "POST virtualmachines": 22,
      "APPLY virtualmachines/status": 40,
      "GET hosts": 7,
    });
  });

  it("subtracts one controller's histogram and reads its quantile", () => {
    const only = (l: Record<string, string>) => l.controller === "a";
    const phase = bucketDifference(after.histogram("q", only), before.histogram("q", only));
    expect([...phase]).toEqual([
      [0.1, 0],
      [1, 10],
      [Number.POSITIVE_INFINITY, 10],
    ]);
    expect(histogramQuantile(0.5, phase)).toBeCloseTo(0.1 + 0.9 * 0.5);
  });
});
