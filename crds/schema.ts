// Building blocks for the Stratus API schemas. Everything here produces plain JSON Schema that is
// also a valid Kubernetes structural schema, and a precise TypeScript type through Static<>.
import { type SchemaOptions, type Static, type TSchema, type TUnsafe, Type } from "@sinclair/typebox";

/** A CEL rule checked by the API server, with the message a person sees when it fails. */
export interface ValidationRule {
  rule: string;
  message: string;
  /** Field path reported with the error, e.g. ".gateway" (relative to the schema the rule sits on). */
  fieldPath?: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
}

/** Options every Stratus schema accepts: a description is required so `kubectl explain` is useful. */
export interface FieldOptions extends SchemaOptions {
  description: string;
  "x-kubernetes-validations"?: ValidationRule[];
}

/** A string enum rendered as `type: string, enum: [...]` (Kubernetes has no const/anyOf enums). */
export function StringEnum<const T extends readonly string[]>(
  values: T,
  options: FieldOptions,
): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ ...options, type: "string", enum: [...values] });
}

/** A Kubernetes resource quantity such as `20Gi` or `512Mi`, bounded with CEL. */
export function Quantity(options: FieldOptions & { min?: string; max?: string }) {
  const { min, max, ...rest } = options;
  const rules: ValidationRule[] = [
    { rule: "isQuantity(self)", message: "must be a quantity such as 512Mi or 20Gi" },
  ];
  if (min) {
    rules.push({
      rule: `!isQuantity(self) || quantity(self).compareTo(quantity('${min}')) >= 0`,
      message: `must be at least ${min}`,
    });
  }
  if (max) {
    rules.push({
      rule: `!isQuantity(self) || quantity(self).compareTo(quantity('${max}')) <= 0`,
      message: `must be at most ${max}`,
    });
  }
  return Type.String({
    ...rest,
    maxLength: 32,
    "x-kubernetes-validations": [...rules, ...(rest["x-kubernetes-validations"] ?? [])],
  });
}

/** The name of another object (a DNS-1123 subdomain). */
export function ObjectName(options: FieldOptions) {
  return Type.String({
    minLength: 1,
    maxLength: 253,
    pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ...options,
  });
}

/** A short name used as a list key (a DNS-1123 label), e.g. a NIC or a volume slot. */
export function LocalName(options: FieldOptions) {
  return Type.String({ minLength: 1, maxLength: 63, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ...options });
}

export function IPv4Address(options: FieldOptions) {
  return Type.String({
    maxLength: 15,
    ...options,
    "x-kubernetes-validations": [
      { rule: "isIP(self) && ip(self).family() == 4", message: "must be an IPv4 address such as 10.1.1.10" },
      ...(options["x-kubernetes-validations"] ?? []),
    ],
  });
}

export function MACAddress(options: FieldOptions) {
  return Type.String({
    ...options,
    maxLength: 17,
    "x-kubernetes-validations": [
      {
        rule: "self.matches('^([0-9a-f]{2}:){5}[0-9a-f]{2}$')",
        message: "must be a lower-case MAC address such as 52:54:00:12:34:56",
      },
      {
        rule: "!self.matches('^.[13579bdf]:')",
        message: "must be a unicast MAC address (the lowest bit of the first octet is 0)",
      },
    ],
  });
}

/** Marks a field immutable once set. */
export function immutable(what: string): ValidationRule {
  return { rule: "self == oldSelf", message: `${what} cannot be changed after creation` };
}

/** A list keyed by `name`: server-side apply merges it per item and rejects duplicate names. */
export function NamedList<T extends TSchema>(item: T, options: FieldOptions & { maxItems: number }) {
  return Type.Array(item, {
    ...options,
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
  });
}

/** metav1.Condition, as every Kubernetes API uses it. */
export const Condition = Type.Object(
  {
    type: Type.String({ maxLength: 316, description: "Type of the condition, e.g. Ready or Scheduled." }),
    status: StringEnum(["True", "False", "Unknown"] as const, { description: "Status of the condition." }),
    observedGeneration: Type.Optional(
      Type.Integer({ minimum: 0, description: "The .metadata.generation the condition was computed from." }),
    ),
    lastTransitionTime: Type.String({ format: "date-time", description: "When the status last changed." }),
    reason: Type.String({
      maxLength: 1024,
      pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
      description: "A CamelCase reason for the last transition, for machines.",
    }),
    message: Type.String({ maxLength: 32768, description: "What happened, for people." }),
  },
  { description: "One aspect of the object's current state." },
);
export type Condition = Static<typeof Condition>;

export function Conditions(description: string) {
  return Type.Optional(
    Type.Array(Condition, {
      description,
      maxItems: 16,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    }),
  );
}

export const ObservedGeneration = Type.Optional(
  Type.Integer({ minimum: 0, description: "The .metadata.generation this status was computed from." }),
);

export const Labels = (description: string) =>
  Type.Optional(
    Type.Array(Type.String({ minLength: 1, maxLength: 63, description: "A tag." }), {
      description,
      maxItems: 32,
      "x-kubernetes-list-type": "set",
    }),
  );

/** An absolute host path with nothing a shell or libvirt XML would read twice. */
export const AbsolutePath = (description: string) =>
  Type.String({
    minLength: 2,
    maxLength: 1024,
    pattern: "^/[A-Za-z0-9._/-]*$",
    description,
    "x-kubernetes-validations": [
      { rule: "!self.contains('/../') && !self.endsWith('/..')", message: "the path may not contain .." },
    ],
  });

/** The status of an allocation object (IPAddress, GuestVlan, PublicIPClaim): nothing to observe but conditions. */
export const AllocationStatus = Type.Object(
  {
    observedGeneration: ObservedGeneration,
    conditions: Conditions("Conditions of the allocation."),
  },
  { description: "Observed state of the allocation." },
);
