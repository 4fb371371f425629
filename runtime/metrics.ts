// The Prometheus series every Stratus process exposes on /metrics.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { QueueObserver } from "./workqueue.ts";

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class RuntimeMetrics {
  readonly registry = new Registry();

  readonly queueDepth = new Gauge({
    name: "stratus_workqueue_depth",
    help: "Keys waiting in a controller's work queue.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly queueAdds = new Counter({
    name: "stratus_workqueue_adds_total",
    help: "Keys added to a controller's work queue.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly queueWait = new Histogram({
    name: "stratus_workqueue_queue_duration_seconds",
    help: "How long a key waited in the queue before a worker took it.",
    labelNames: ["controller"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly queueRetries = new Counter({
    name: "stratus_workqueue_retries_total",
    help: "Keys re-queued with backoff after a failed reconcile.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: "stratus_reconcile_duration_seconds",
    help: "Time spent in one reconcile.",
    labelNames: ["controller"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: "stratus_reconcile_errors_total",
    help: "Reconciles that ended with an error.",
    labelNames: ["controller"] as const,
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: "stratus_api_requests_total",
    help: "Requests to the Kubernetes API server, by verb, resource and HTTP status code (0: no answer).",
    labelNames: ["verb", "resource", "code"] as const,
    registers: [this.registry],
  });
  readonly apiRequestDuration = new Histogram({
    name: "stratus_api_request_duration_seconds",
    help: "Latency of requests to the Kubernetes API server (watches excluded).",
    labelNames: ["verb", "resource"] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly informerRelists = new Counter({
    name: "stratus_informer_lists_total",
    help: "Full lists an informer made (the first one and every relist).",
    labelNames: ["resource"] as const,
    registers: [this.registry],
  });
  readonly informerEvents = new Counter({
    name: "stratus_informer_watch_events_total",
    help: "Watch events an informer received, by resource and type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).",
    labelNames: ["resource", "type"] as const,
    registers: [this.registry],
  });
  readonly informerRestarts = new Counter({
    name: "stratus_informer_watch_restarts_total",
    help: "Watches an informer restarted, by reason (closed, error, gone, stalled).",
    labelNames: ["resource", "reason"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "stratus_leader",
    help: "1 while this process holds the component's leader lease.",
    labelNames: ["component"] as const,
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
  }

  queueObserver(controller: string): QueueObserver {
    const labels = { controller };
    return {
      depth: (depth) => this.queueDepth.set(labels, depth),
      added: () => this.queueAdds.inc(labels),
      waited: (seconds) => this.queueWait.observe(labels, seconds),
      retried: () => this.queueRetries.inc(labels),
    };
  }
}
