// Every component the operator can run; `--components` picks a subset.
import { computeComponent } from "../controllers/compute/compute.ts";
import { fabricComponent } from "../controllers/fabric/fabric.ts";
import { networkComponent } from "../controllers/network/network.ts";
import { schedulerComponent } from "../controllers/scheduler/scheduler.ts";
import type { ControllerSettings } from "../controllers/settings.ts";
import { storageComponent } from "../controllers/storage/storage.ts";
import type { Component } from "../runtime/component.ts";

export const COMPONENT_NAMES = ["compute", "scheduler", "network", "storage", "fabric"] as const;

export function components(settings: ControllerSettings): Component[] {
  return [
    computeComponent,
    schedulerComponent(settings.schedulerAlgorithm),
    networkComponent(settings),
    storageComponent,
    fabricComponent(settings),
  ];
}
