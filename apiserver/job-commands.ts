// queryAsyncJobResult: the answer to every async command's jobid, read from the AsyncJob
// (jobs.ts) in this replica's cache, for a caller RBAC lets get jobs in the job's account.
import { Resources } from "../crds/index.ts";
import type { Command } from "./api.ts";
import { entityNotFound } from "./envelope.ts";
import { jobView } from "./jobs.ts";

/** How long queryAsyncJobResult waits for a just-created job to reach this replica's cache. */
const JOB_CACHE_GRACE_MS = 2_000;

export const JOB_COMMANDS: Record<string, Command> = {
  queryAsyncJobResult: {
    async handler(call) {
      // Clients poll at once: a job created a moment ago (here or by another replica) may not be
      // in this replica's cache yet, so a miss waits briefly before it is an unknown id.
      const id = call.params.requiredUuid("jobid");
      let job = call.api.jobs.byIndex("uid", id)[0];
      for (let waited = 0; !job && waited < JOB_CACHE_GRACE_MS; waited += 100) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        job = call.api.jobs.byIndex("uid", id)[0];
      }
      if (!job) throw entityNotFound("jobid", id);
      if (!(await call.api.can(call.caller, "get", Resources.asyncJobs, job.metadata.namespace)))
        throw entityNotFound("jobid", job.metadata.uid as string);
      return jobView(job);
    },
  },
};
