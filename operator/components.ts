// Every component the operator can run; `--components` picks a subset. Placement and IPAM are
// part of compute (the orchestration engine), so a VM start is one orchestration write.
import { computeComponent } from "../controllers/compute/compute.ts";
import { fabricComponent } from "../controllers/fabric/fabric.ts";
import { networkComponent } from "../controllers/network/network.ts";
import type { ControllerSettings } from "../controllers/settings.ts";
import { storageComponent } from "../controllers/storage/storage.ts";
import type { Component } from "../runtime/component.ts";

export const COMPONENT_NAMES = ["compute", "network", "storage", "fabric"] as const;

export function components(settings: ControllerSettings): Component[] {
  return [
    computeComponent(settings.schedulerAlgorithm, settings.maxMigrationsPerHost),
    networkComponent(settings),
    storageComponent,
    fabricComponent(settings),
  ];
}
