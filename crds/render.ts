// Turns a Stratus kind into a CustomResourceDefinition. The schema is checked to be structural
// (every node typed and described, no $ref, no additionalProperties: false) rather than trusted.
import { stringify } from "yaml";
import { CATEGORY, GROUP, type KindDefinition, VERSION } from "./definition.ts";
import { FINALIZER_POLICY_NAME, renderFinalizerPolicy } from "./finalizers.ts";
import { renderSegmentPolicy, SEGMENT_POLICY_NAME } from "./network-admission.ts";
import { PLACEMENT_POLICY_NAME, renderPlacementPolicy } from "./placement-policy.ts";

type Json = Record<string, unknown>;

/** Schema keywords a CRD accepts, in the order they are written out. */
const ALLOWED_KEYWORDS = [
  "description",
  "type",
  "format",
  "enum",
  "default",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
  "minProperties",
  "maxProperties",
  "nullable",
  "required",
  "properties",
  "additionalProperties",
  "items",
  "x-kubernetes-preserve-unknown-fields",
  "x-kubernetes-int-or-string",
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
  "x-kubernetes-map-type",
  "x-kubernetes-validations",
] as const;

export class SchemaError extends Error {
  override name = "SchemaError";
}

/** Converts a TypeBox schema node into a structural OpenAPI v3 schema. */
export function toStructuralSchema(node: unknown, path: string): Json {
  const schema = { ...(node as Json) };
  // TypeBox writes Record<string, T> as patternProperties; Kubernetes spells maps additionalProperties.
  if (schema.patternProperties) {
    const values = Object.values(schema.patternProperties as Json);
    if (values.length !== 1) throw new SchemaError(`${path}: only one pattern of map values is supported`);
    schema.additionalProperties = values[0];
    delete schema.patternProperties;
  }
  // Kubernetes prunes unknown fields already; `false` is not allowed in a structural schema.
  if (schema.additionalProperties === false) delete schema.additionalProperties;

  for (const key of Object.keys(schema)) {
    if (!(ALLOWED_KEYWORDS as readonly string[]).includes(key)) {
      throw new SchemaError(`${path}: "${key}" is not allowed in a Kubernetes structural schema`);
    }
  }
  if (typeof schema.description !== "string" || schema.description.trim() === "") {
    throw new SchemaError(`${path}: every field needs a description (kubectl explain shows it)`);
  }
  if (typeof schema.type !== "string" && !schema["x-kubernetes-int-or-string"]) {
    throw new SchemaError(`${path}: every field needs a type`);
  }
  if (schema.enum && schema.type !== "string") throw new SchemaError(`${path}: enums must be string enums`);

  const out: Json = {};
  for (const key of ALLOWED_KEYWORDS) {
    const value = schema[key];
    if (value === undefined) continue;
    if (key === "properties") {
      out.properties = Object.fromEntries(
        Object.entries(value as Json).map(([name, child]) => [
          name,
          toStructuralSchema(child, `${path}.${name}`),
        ]),
      );
    } else if (key === "items") {
      out.items = toStructuralSchema(value, `${path}[]`);
    } else if (key === "additionalProperties") {
      out.additionalProperties = toStructuralSchema(value, `${path}{}`);
    } else if (key === "required") {
      if ((value as string[]).length > 0) out.required = [...(value as string[])];
    } else {
      out[key] = structuredClone(value);
    }
  }
  return out;
}

export function crdName(kind: KindDefinition): string {
  return `${kind.plural}.${GROUP}`;
}

export function renderCustomResourceDefinition(kind: KindDefinition): Json {
  const openAPIV3Schema: Json = {
    description: kind.description,
    type: "object",
    required: ["spec"],
    properties: {
      apiVersion: {
        description: "The versioned schema of this object: stratus.io/v1alpha1.",
        type: "string",
      },
      kind: { description: `The kind of this object: ${kind.kind}.`, type: "string" },
      metadata: { type: "object" },
      spec: toStructuralSchema(kind.spec, `${kind.kind}.spec`),
      status: toStructuralSchema(kind.status, `${kind.kind}.status`),
    },
  };
  if (kind.validations?.length) openAPIV3Schema["x-kubernetes-validations"] = kind.validations;
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: crdName(kind), labels: { "app.kubernetes.io/part-of": "stratus" } },
    spec: {
      group: GROUP,
      scope: kind.scope,
      names: {
        kind: kind.kind,
        listKind: `${kind.kind}List`,
        plural: kind.plural,
        singular: kind.singular,
        shortNames: kind.shortNames,
        categories: [CATEGORY],
      },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: kind.printerColumns,
          ...(kind.selectableFields?.length
            ? { selectableFields: kind.selectableFields.map((jsonPath) => ({ jsonPath })) }
            : {}),
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}

const HEADER = "# Generated by `npm run generate` from crds/kinds/*.ts. Do not edit.\n";

/** The files of crds/generated/: one YAML per CRD, the finalizer and segment policies, and a kustomization listing them. */
export function renderGeneratedFiles(kinds: readonly KindDefinition[]): Map<string, string> {
  const files = new Map<string, string>();
  for (const kind of kinds) {
    files.set(
      `${crdName(kind)}.yaml`,
      HEADER + stringify(renderCustomResourceDefinition(kind), { lineWidth: 0 }),
    );
  }
  for (const [name, render] of [
    [FINALIZER_POLICY_NAME, renderFinalizerPolicy],
    [PLACEMENT_POLICY_NAME, renderPlacementPolicy],
    [SEGMENT_POLICY_NAME, renderSegmentPolicy],
  ] as const)
    files.set(
      `${name}.yaml`,
      HEADER +
        render()
          .map((object) => stringify(object, { lineWidth: 0 }))
          .join("---\n"),
    );
  const resources = [...files.keys()].sort();
  files.set(
    "kustomization.yaml",
    HEADER + stringify({ apiVersion: "kustomize.config.k8s.io/v1beta1", kind: "Kustomization", resources }),
  );
  return files;
}
