import { Type } from "@sinclair/typebox";
import { cloudStackNameField, objectNameOf } from "../cloudstack-names.ts";
import { defineKind } from "../definition.ts";
import { ObservedGeneration } from "../schema.ts";

/** The object name of the user data CloudStack calls `name` (see objectNameOf). */
export function userDataObjectName(cloudStackName: string): string {
  return objectNameOf(cloudStackName, "userdata");
}

export const UserDataKind = defineKind({
  kind: "UserData",
  plural: "userdatas",
  singular: "userdata",
  shortNames: ["ud"],
  scope: "Namespaced",
  description:
    "User data an account registered (CloudStack's registerUserData): a VM deployed with its id gets a copy in its own user data Secret.",
  spec: Type.Object(
    {
      userData: Type.String({
        minLength: 1,
        maxLength: 43_692,
        pattern: "^[A-Za-z0-9+/]*={0,2}$",
        description: "The user data, base64 (at most 32 KiB decoded).",
      }),
      params: Type.Optional(
        Type.Array(Type.String({ minLength: 1, maxLength: 64, description: "A variable name." }), {
          description: "CloudStack's declared variables of the user data (kept and shown; not substituted).",
          maxItems: 32,
          "x-kubernetes-list-type": "atomic",
        }),
      ),
      name: cloudStackNameField(),
    },
    {
      description: "The registered user data.",
      "x-kubernetes-validations": [
        {
          rule: "self == oldSelf",
          message: "registered user data cannot be changed; delete it and register again",
        },
      ],
    },
  ),
  status: Type.Object(
    { observedGeneration: ObservedGeneration },
    { description: "Nothing is observed yet." },
  ),
  printerColumns: [
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp", description: "Age." },
  ],
});
