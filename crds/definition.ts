// What a Stratus kind declares: its names, scope, schemas and how kubectl shows it. The generator
// turns each into a CustomResourceDefinition; the types come from the same schemas.
import type { Static, TObject } from "@sinclair/typebox";
import type { ObjectMeta } from "../runtime/client.ts";
import type { ValidationRule } from "./schema.ts";

export const GROUP = "stratus.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const CATEGORY = "stratus";

export interface PrinterColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  jsonPath: string;
  description: string;
  priority?: number;
  format?: string;
}

export interface KindDefinition<Spec extends TObject = TObject, Status extends TObject = TObject> {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: "Cluster" | "Namespaced";
  description: string;
  spec: Spec;
  status: Status;
  printerColumns: PrinterColumn[];
  /** Fields usable in field selectors, e.g. `.status.host` so an agent watches only its VMs. */
  selectableFields?: string[];
  /** Rules on the whole object (they may read metadata.name). */
  validations?: ValidationRule[];
}

export function defineKind<Spec extends TObject, Status extends TObject>(
  definition: KindDefinition<Spec, Status>,
): KindDefinition<Spec, Status> {
  return definition;
}

/** The TypeScript type of a whole object of a kind. */
export type ObjectOf<D extends KindDefinition> = {
  apiVersion: typeof API_VERSION;
  kind: D["kind"];
  metadata: ObjectMeta;
  spec: Static<D["spec"]>;
  status?: Partial<Static<D["status"]>>;
};

/** Where a kind lives in the API (the runtime's ResourceType). */
export function resourceOf(kind: KindDefinition): {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
} {
  return {
    group: GROUP,
    version: VERSION,
    plural: kind.plural,
    kind: kind.kind,
    namespaced: kind.scope === "Namespaced",
  };
}
