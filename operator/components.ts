// Every component the operator can run; `--components` picks a subset.
import { fabricComponent } from "../controllers/fabric/zone-rollup.ts";
import type { Component } from "../runtime/component.ts";

export const COMPONENTS: readonly Component[] = [fabricComponent];
