import { Type } from "@sinclair/typebox";
import { defineKind } from "../definition.ts";
import { Conditions, ObservedGeneration, StringEnum } from "../schema.ts";

export const JOB_STATES = ["Pending", "InProgress", "Succeeded", "Failed"] as const;

export const AsyncJobKind = defineKind({
  kind: "AsyncJob",
  plural: "asyncjobs",
  singular: "asyncjob",
  shortNames: ["ajob"],
  scope: "Namespaced",
  description:
    "An asynchronous CloudStack API command (deployVirtualMachine, stopVirtualMachine, ...). Its UID is the CloudStack jobid, so any API replica can answer queryAsyncJobResult.",
  spec: Type.Object(
    {
      command: Type.String({
        minLength: 1,
        maxLength: 128,
        pattern: "^[a-zA-Z]+$",
        description: "The CloudStack command name.",
      }),
      parameters: Type.Optional(
        Type.Record(Type.String(), Type.String({ maxLength: 65_536, description: "A parameter value." }), {
          description: "The command's parameters as the client sent them (signature fields removed).",
          maxProperties: 256,
        }),
      ),
      user: Type.String({ maxLength: 253, description: "The Kubernetes user the command runs as." }),
      groups: Type.Optional(
        Type.Array(Type.String({ maxLength: 253, description: "A group." }), {
          maxItems: 32,
          description: "That user's groups: what the job undoes for a refused create, it does as them.",
        }),
      ),
      account: Type.Optional(
        Type.String({ maxLength: 253, description: "The CloudStack account (namespace)." }),
      ),
      target: Type.Optional(
        Type.Object(
          {
            kind: Type.String({ maxLength: 63, description: "Kind of the object the job acts on." }),
            name: Type.String({ maxLength: 253, description: "Its name." }),
            uid: Type.Optional(Type.String({ maxLength: 36, description: "Its UID (the CloudStack id)." })),
          },
          { description: "The object the job acts on." },
        ),
      ),
    },
    {
      description: "The command; it never changes after creation.",
      "x-kubernetes-validations": [{ rule: "self == oldSelf", message: "a job's command cannot be changed" }],
    },
  ),
  status: Type.Object(
    {
      observedGeneration: ObservedGeneration,
      state: Type.Optional(
        StringEnum(JOB_STATES, { description: "Pending, InProgress, Succeeded or Failed." }),
      ),
      startedAt: Type.Optional(Type.String({ format: "date-time", description: "When the job started." })),
      waitingFor: Type.Optional(
        Type.String({
          maxLength: 2048,
          description: "While in progress: what the job waits for (e.g. what keeps a namespace from going).",
        }),
      ),
      finishedAt: Type.Optional(
        Type.String({
          format: "date-time",
          description: "When the job ended; the result is frozen from then on.",
        }),
      ),
      result: Type.Optional(
        Type.Object(
          {},
          {
            description: "The CloudStack response object of the command.",
            "x-kubernetes-preserve-unknown-fields": true,
          },
        ),
      ),
      error: Type.Optional(
        Type.Object(
          {
            code: Type.Integer({
              minimum: 400,
              maximum: 599,
              description: "CloudStack error code, e.g. 431 or 530.",
            }),
            text: Type.String({ maxLength: 4096, description: "The error text." }),
          },
          { description: "Why the job failed." },
        ),
      ),
      conditions: Conditions("Conditions of the job."),
    },
    {
      description: "Progress and result of the job.",
      "x-kubernetes-validations": [
        {
          rule: "!has(oldSelf.finishedAt) || self == oldSelf",
          message: "a finished job's result is frozen",
        },
      ],
    },
  ),
  printerColumns: [
    { name: "Command", type: "string", jsonPath: ".spec.command", description: "CloudStack command." },
    { name: "State", type: "string", jsonPath: ".status.state", description: "Job state." },
    { name: "User", type: "string", jsonPath: ".spec.user", description: "Who ran it.", priority: 1 },
    {
      name: "Age",
      type: "date",
      jsonPath: ".metadata.creationTimestamp",
      description: "Time since creation.",
    },
  ],
});
