import { Type } from "@sinclair/typebox";
import { describe, expect, it } from "vitest";
import { driftedFiles } from "./generate.ts";
import { KINDS } from "./index.ts";
import { renderCustomResourceDefinition, SchemaError, toStructuralSchema } from "./render.ts";

/** Every node of a schema, with its path. */
function* walk(node: Record<string, unknown>, path: string): Generator<[string, Record<string, unknown>]> {
  yield [path, node];
  for (const [name, child] of Object.entries(
    (node.properties as Record<string, Record<string, unknown>>) ?? {},
  )) {
    yield* walk(child, `${path}.${name}`);
  }
  if (node.items) yield* walk(node.items as Record<string, unknown>, `${path}[]`);
  if (typeof node.additionalProperties === "object")
    yield* walk(node.additionalProperties as Record<string, unknown>, `${path}{}`);
}

describe("CRD generation", () => {
  it("the committed crds/generated equals what the kinds generate", async () => {
    expect(await driftedFiles()).toEqual([]);
  });

  it.each(KINDS.map((k) => [k.kind, k] as const))("%s is structural, described and complete", (_, kind) => {
    const crd = renderCustomResourceDefinition(kind) as {
      spec: {
        names: { categories: string[] };
        versions: { subresources: unknown; schema: { openAPIV3Schema: Record<string, unknown> } }[];
      };
    };
    const version = crd.spec.versions[0];
    expect(version?.subresources).toEqual({ status: {} });
    expect(crd.spec.names.categories).toEqual(["stratus"]);
    const root = version?.schema.openAPIV3Schema as Record<string, unknown>;
    const properties = root.properties as Record<string, Record<string, unknown>>;
    for (const part of ["spec", "status"] as const) {
      for (const [path, node] of walk(properties[part] as Record<string, unknown>, `${kind.kind}.${part}`)) {
        expect(node.description, `${path} has a description`).toBeTruthy();
        expect(node.type ?? node["x-kubernetes-int-or-string"], `${path} has a type`).toBeTruthy();
        expect(node.additionalProperties, `${path} has no additionalProperties: false`).not.toBe(false);
        expect(JSON.stringify(node)).not.toContain("$ref");
      }
    }
  });

  it("gives every kind of the API its short name", () => {
    const shortNames = Object.fromEntries(KINDS.map((k) => [k.kind, k.shortNames[0]]));
    expect(shortNames).toMatchObject({
      VirtualMachine: "vm",
      Volume: "vol",
      Network: "vnet",
      IPAddress: "sip",
      Template: "tmpl",
      ServiceOffering: "so",
      DiskOffering: "do",
    });
  });

  it("turns records into additionalProperties and drops additionalProperties: false", () => {
    const schema = toStructuralSchema(
      Type.Object(
        { labels: Type.Record(Type.String(), Type.String({ description: "value" }), { description: "map" }) },
        { description: "root", additionalProperties: false },
      ),
      "x",
    );
    expect(schema).toEqual({
      description: "root",
      type: "object",
      required: ["labels"],
      properties: {
        labels: {
          description: "map",
          type: "object",
          additionalProperties: { description: "value", type: "string" },
        },
      },
    });
  });

  it("refuses what a structural schema cannot hold, naming the field", () => {
    expect(() =>
      toStructuralSchema(Type.Object({ a: Type.String() }, { description: "root" }), "Kind.spec"),
    ).toThrow(new SchemaError("Kind.spec.a: every field needs a description (kubectl explain shows it)"));
    expect(() =>
      toStructuralSchema(
        Type.Union([Type.Literal("a"), Type.Literal("b")], { description: "u" }),
        "Kind.spec.mode",
      ),
    ).toThrow(/Kind\.spec\.mode: "anyOf" is not allowed/);
    expect(() => toStructuralSchema({ $ref: "#/x", description: "r" }, "Kind.spec.r")).toThrow(
      /"\$ref" is not allowed/,
    );
  });
});
