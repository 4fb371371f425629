// An async command that sets one boolean in a cluster-scoped object's spec (a pool's or a host's
// maintenance, a host's degraded mark) through the caller's own client, so RBAC decides who may.
// The job ends once this replica's cache shows the controllers got where the command asked.
import type { KubeObject, ResourceType } from "../runtime/client.ts";
import type { Informer } from "../runtime/informer.ts";
import type { Call, CloudStackApi, Command } from "./api.ts";
import { ApiError, ERROR, type Json } from "./envelope.ts";
import { jobObject, submitJob } from "./jobs.ts";

export function specToggleCommand<T extends KubeObject & { spec: object }>(options: {
  command: string;
  type: ResourceType;
  field: string;
  value: boolean;
  /** The object the call names (authorization checked). */
  find: (call: Call) => Promise<T>;
  informer: (api: CloudStackApi) => Informer<T>;
  /** Why the command does not apply to the object now, as CloudStack says it; undefined when it does. */
  refusal: (object: T) => string | undefined;
  /** Whether the object got where the command asked (the job's end). */
  done: (object: T) => boolean;
  /** The job's result: `{ <item>: view }`. */
  result: (object: T, api: CloudStackApi) => Json;
}): Command {
  return {
    async: true,
    async handler(call) {
      const object = await options.find(call);
      const refusal = options.refusal(object);
      if (refusal) throw new ApiError(ERROR.PARAM, refusal);
      await call.caller.client.mergePatch(options.type, object.metadata.name as string, undefined, {
        spec: { [options.field]: options.value },
      });
      const job = await submitJob(call, options.command, { ...object, kind: options.type.kind });
      return { jobid: job.metadata.uid as string };
    },
    outcome(job, api) {
      const object = jobObject(options.informer(api), job, job.spec.target?.uid);
      if (!object) return { error: { code: ERROR.INTERNAL, text: `the ${options.type.kind} was deleted` } };
      const spec = object.spec as Record<string, unknown>;
      if (Boolean(spec[options.field]) !== options.value || !options.done(object)) return undefined;
      return { result: options.result(object, api) };
    },
  };
}
