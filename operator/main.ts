#!/usr/bin/env node
// stratus-operator: runs any subset of the control-plane components (--components=a,b), each
// under its own leader election, so each can also be its own Deployment and scale on its own.
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import type { KubeConfig } from "@kubernetes/client-node";
import { ALGORITHMS, type Algorithm } from "../controllers/scheduler/placement.ts";
import { type ControllerSettings, DEFAULT_SETTINGS } from "../controllers/settings.ts";
import { KubeClient } from "../runtime/client.ts";
import { type Component, InformerFactory } from "../runtime/component.ts";
import { kubeConfigFrom } from "../runtime/config.ts";
import { EventRecorder } from "../runtime/events.ts";
import { apiServerCheck, HealthServer } from "../runtime/health.ts";
import { LeaderElector } from "../runtime/leader-election.ts";
import { createLogger } from "../runtime/logger.ts";
import { RuntimeMetrics } from "../runtime/metrics.ts";
import { COMPONENT_NAMES, components } from "./components.ts";

const HELP = `stratus-operator: the Stratus control-plane components.

Options:
  --components=a,b           components to run (default: all): ${COMPONENT_NAMES.join(", ")}
  --kubeconfig=PATH          kubeconfig (default: $KUBECONFIG, else the in-cluster service account)
  --leader-elect=BOOL        elect a leader per component (default true)
  --lease-namespace=NS       namespace of the leader Leases (default stratus-system)
  --lease-duration=SECONDS   default 15; --renew-deadline default 10; --retry-period default 2
  --identity=NAME            this replica's name in Leases and Events (default host_pid)
  --health-address=HOST:PORT /healthz, /readyz and /metrics (default 127.0.0.1:8081; port 0 picks one)
  --resync=SECONDS           re-examine every object this often (default 300)
  --workers=N                workers per controller (default 2)
  --scheduler-algorithm=A    how compute places VMs: ${ALGORITHMS.join(" or ")} (default ${DEFAULT_SETTINGS.schedulerAlgorithm})
  --max-migrations-per-host=N live migrations at once per host, as source or target (default ${DEFAULT_SETTINGS.maxMigrationsPerHost})
  --host-grace=SECONDS       a host stays Ready this long past its heartbeat Lease (default ${DEFAULT_SETTINGS.hostGraceMs / 1000})
  --vlan-range=FIRST-LAST    VLANs for networks of zones that name no vlanRange (default ${DEFAULT_SETTINGS.vlanRange.first}-${DEFAULT_SETTINGS.vlanRange.last})
  Host heartbeat Leases are read from --lease-namespace too.
`;

export interface OperatorOptions {
  components: Component[];
  kubeConfig: KubeConfig;
  leaderElect: boolean;
  leaseNamespace: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  identity: string;
  healthHost: string;
  healthPort: number;
  resyncMs: number;
  workers: number;
  settings: ControllerSettings;
}

class UsageError extends Error {}

export function parseOperatorArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): OperatorOptions | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      components: { type: "string" },
      kubeconfig: { type: "string" },
      "leader-elect": { type: "string", default: "true" },
      "lease-namespace": { type: "string", default: "stratus-system" },
      "lease-duration": { type: "string", default: "15" },
      "renew-deadline": { type: "string", default: "10" },
      "retry-period": { type: "string", default: "2" },
      identity: { type: "string" },
      "health-address": { type: "string", default: "127.0.0.1:8081" },
      resync: { type: "string", default: "300" },
      workers: { type: "string", default: "2" },
      "scheduler-algorithm": { type: "string", default: DEFAULT_SETTINGS.schedulerAlgorithm },
      "host-grace": { type: "string", default: String(DEFAULT_SETTINGS.hostGraceMs / 1000) },
      "max-migrations-per-host": { type: "string", default: String(DEFAULT_SETTINGS.maxMigrationsPerHost) },
      "vlan-range": {
        type: "string",
        default: `${DEFAULT_SETTINGS.vlanRange.first}-${DEFAULT_SETTINGS.vlanRange.last}`,
      },
    },
  });
  if (values.help) return "help";
  const names = values.components
    ? values.components
        .split(",")
        .map((c) => c.trim())
        .filter(Boolean)
    : [...COMPONENT_NAMES];
  const unknown = names.filter((n) => !(COMPONENT_NAMES as readonly string[]).includes(n));
  if (unknown.length > 0) {
    throw new UsageError(`unknown component(s) ${unknown.join(", ")}; known: ${COMPONENT_NAMES.join(", ")}`);
  }
  const algorithm = values["scheduler-algorithm"] as string;
  if (!(ALGORITHMS as readonly string[]).includes(algorithm))
    throw new UsageError(`--scheduler-algorithm must be ${ALGORITHMS.join(" or ")}, not "${algorithm}"`);
  const graceSeconds = Number(values["host-grace"]);
  if (!Number.isFinite(graceSeconds) || graceSeconds < 0)
    throw new UsageError(`--host-grace must be a number of seconds, not "${values["host-grace"]}"`);
  const maxMigrationsPerHost = Number(values["max-migrations-per-host"]);
  if (!Number.isInteger(maxMigrationsPerHost) || maxMigrationsPerHost < 1 || maxMigrationsPerHost > 64)
    throw new UsageError(`--max-migrations-per-host must be a whole number from 1 to 64`);
  const vlanMatch = /^(\d+)-(\d+)$/.exec(values["vlan-range"] as string);
  const vlanRange = vlanMatch ? { first: Number(vlanMatch[1]), last: Number(vlanMatch[2]) } : undefined;
  if (!vlanRange || vlanRange.first < 1 || vlanRange.last > 4094 || vlanRange.first > vlanRange.last)
    throw new UsageError(`--vlan-range must be FIRST-LAST within 1-4094, not "${values["vlan-range"]}"`);
  const seconds = (flag: string, value: string) => {
    const number = Number(value);
    if (!Number.isFinite(number) || number <= 0)
      throw new UsageError(`--${flag} must be a positive number of seconds, not "${value}"`);
    return number * 1000;
  };
  const [healthHost, healthPortText] = (values["health-address"] as string).split(/:(?=\d+$)/);
  const healthPort = Number(healthPortText);
  if (!healthHost || !Number.isInteger(healthPort))
    throw new UsageError(`--health-address must be HOST:PORT, not "${values["health-address"]}"`);
  const workers = Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1)
    throw new UsageError(`--workers must be a whole number of at least 1`);

  const kubeConfig = kubeConfigFrom(values.kubeconfig, env);
  const settings: ControllerSettings = {
    leaseNamespace: values["lease-namespace"] as string,
    hostGraceMs: graceSeconds * 1000,
    schedulerAlgorithm: algorithm as Algorithm,
    vlanRange,
    maxMigrationsPerHost,
  };
  const available = components(settings);

  return {
    components: names.map((n) => available.find((c) => c.name === n) as Component),
    kubeConfig,
    leaderElect: values["leader-elect"] !== "false",
    leaseNamespace: values["lease-namespace"] as string,
    leaseDurationMs: seconds("lease-duration", values["lease-duration"] as string),
    renewDeadlineMs: seconds("renew-deadline", values["renew-deadline"] as string),
    retryPeriodMs: seconds("retry-period", values["retry-period"] as string),
    identity: values.identity ?? `${hostname()}_${process.pid}`,
    healthHost,
    healthPort,
    resyncMs: seconds("resync", values.resync as string),
    workers,
    settings,
  };
}

/** Runs the operator until `signal` aborts; then drains, releases its leases and returns. */
export async function runOperator(options: OperatorOptions, signal: AbortSignal): Promise<void> {
  const logger = createLogger("stratus-operator").child({ identity: options.identity });
  const metrics = new RuntimeMetrics();
  const client = new KubeClient(options.kubeConfig, {
    metrics,
    userAgent: `stratus-operator/${options.identity}`,
  });
  const informers = new InformerFactory(client, { resyncPeriodMs: options.resyncMs, logger, metrics });

  const running = options.components.map((component) => {
    const componentLogger = logger.child({ component: component.name });
    const controllers = component.setup({
      client,
      informers,
      metrics,
      logger: componentLogger,
      events: new EventRecorder(client, `stratus.io/${component.name}`, options.identity, componentLogger),
      fieldManager: `stratus-operator/${component.name}`,
    });
    return { component, controllers, logger: componentLogger };
  });

  const health = new HealthServer({
    metrics,
    host: options.healthHost,
    port: options.healthPort,
    readiness: {
      "api-server": apiServerCheck(client),
      informers: () => {
        const unsynced = informers.unsynced();
        return unsynced.length > 0 ? `not synced yet: ${unsynced.join(", ")}` : undefined;
      },
    },
  });
  const port = await health.listen();
  informers.start();
  logger.info(
    { components: options.components.map((c) => c.name), health: `${options.healthHost}:${port}` },
    "operator started",
  );

  await Promise.all(
    running.map(async ({ component, controllers, logger: componentLogger }) => {
      const lead = async (leaderSignal: AbortSignal) => {
        await Promise.race([
          informers.waitForSync(),
          new Promise((resolve) => leaderSignal.addEventListener("abort", resolve)),
        ]);
        if (leaderSignal.aborted) return;
        componentLogger.info({ controllers: controllers.map((c) => c.name) }, "running controllers");
        await Promise.all(controllers.map((c) => c.run(leaderSignal, options.workers)));
      };
      if (!options.leaderElect) return lead(signal);
      const elector = new LeaderElector(client, {
        namespace: options.leaseNamespace,
        name: `stratus-${component.name}`,
        identity: options.identity,
        leaseDurationMs: options.leaseDurationMs,
        renewDeadlineMs: options.renewDeadlineMs,
        retryPeriodMs: options.retryPeriodMs,
        logger: componentLogger,
        onLeadershipChange: (leading) => metrics.leader.set({ component: component.name }, leading ? 1 : 0),
      });
      return elector.run(signal, lead);
    }),
  );
  await informers.stop();
  await health.close();
  await client.close();
  logger.info("operator stopped");
}

async function main(): Promise<void> {
  let options: OperatorOptions | "help";
  try {
    options = parseOperatorArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`stratus-operator: ${(error as Error).message}\n`);
    process.exit(2);
  }
  if (options === "help") {
    process.stdout.write(HELP);
    return;
  }
  const shutdown = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      shutdown.abort();
      // Draining is bounded: a stuck reconcile must not keep a terminating pod alive forever.
      setTimeout(() => process.exit(1), 25_000).unref();
    });
  }
  await runOperator(options, shutdown.signal);
}

if (import.meta.main) await main();
