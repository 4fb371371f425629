// Settings the operator's flags give the controllers.
import type { Algorithm } from "./scheduler/placement.ts";

/** How long roll-ups (host allocation, zone, network usage) wait after a change: a burst is one write. */
export const ROLLUP_DELAY_MS = 2_000;

export interface ControllerSettings {
  /** Namespace of the host agents' heartbeat Leases. */
  leaseNamespace: string;
  /** How long past its Lease's duration a host keeps Ready (clock skew, a slow API server). */
  hostGraceMs: number;
  schedulerAlgorithm: Algorithm;
  /** VLAN ids handed to networks of a zone that names no spec.vlanRange. */
  vlanRange: { first: number; last: number };
  /** Live migrations admitted at once per host (as source or target). */
  maxMigrationsPerHost: number;
}

export const DEFAULT_SETTINGS: ControllerSettings = {
  leaseNamespace: "stratus-system",
  hostGraceMs: 10_000,
  schedulerAlgorithm: "least-allocated",
  vlanRange: { first: 100, last: 4094 },
  maxMigrationsPerHost: 2,
};
