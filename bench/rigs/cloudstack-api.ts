// The CloudStack-compatible API under load: listVirtualMachines (the default first page, as
// CloudMonkey and Terraform ask for it) with 1,000 and 10,000 VMs in the account, and
// queryAsyncJobResult, each asked sequentially so the figure is one request's latency; the cost of
// a 1 MiB request with a wrong signature next to the same request signed right; and the access
// reviews one listall across many accounts asks for.
import { DECISION_TTL_MS } from "../../apiserver/access.ts";
import { canonicalString, sign } from "../../apiserver/signature.ts";
import { Resources } from "../../crds/index.ts";
import { issueApiKey } from "../../devcluster/cloud-seed.ts";
import { freePort } from "../../devcluster/ports.ts";
import { pollUntil, sleep } from "../../runtime/time.ts";
import { BenchContext, withConcurrency } from "../lib/context.ts";
import { type CpuUse, cpuUse, sampleCpu } from "../lib/cpu.ts";
import type { MetricsSnapshot } from "../lib/metrics.ts";
import { type Summary, summarize } from "../lib/stats.ts";
import { benchVm } from "./ceiling.ts";

export interface ApiResult {
  listVirtualMachines: { vms: number; latency: Summary; samples: number[] }[];
  queryAsyncJobResult: Summary;
  /**
   * A listZones POST of about 1 MiB whose value has `~`, `[` and `*` (every canonical form
   * differs, the verifier's worst case): signed right, and with a wrong signature.
   */
  largeRequest: { bytes: number; signed: Summary; badSignature: Summary };
  /** SubjectAccessReviews asked for one listVirtualMachines listall=true over `accounts` accounts. */
  listAll: { accounts: number; reviews: number };
  apiComponentRss: number;
  /** CPU per process over the rig, per VM in the account (creates, caching and the requests). */
  cpu: Record<string, CpuUse>;
}

export interface CloudStackApi {
  pid: number;
  call(params: Record<string, string>): Promise<Record<string, unknown>>;
  timed(params: Record<string, string>): Promise<{ seconds: number; answer: Record<string, unknown> }>;
  /** A form POST, signed (or with a wrong signature); its HTTP status and seconds. */
  timedPost(
    params: Record<string, string>,
    wrongSignature?: boolean,
  ): Promise<{ seconds: number; status: number }>;
  metrics(): Promise<MetricsSnapshot>;
  stop(): Promise<void>;
}

/** Starts the API component with an admin key whose account is `account` (a namespace). */
export async function startCloudStackApi(context: BenchContext, account: string): Promise<CloudStackApi> {
  await context.namespace("bench-keys");
  const port = await freePort();
  const api = await context.start("apiserver", "apiserver/main.ts", [
    `--listen=127.0.0.1:${port}`,
    "--keys-namespace=bench-keys",
  ]);
  await api.ready;
  const key = await issueApiKey(context.client, {
    name: `bench-admin-${account}`,
    keysNamespace: "bench-keys",
    user: "bench-admin",
    groups: ["system:masters"],
    account,
  });
  const endpoint = `http://127.0.0.1:${port}/client/api`;
  const signed = (params: Record<string, string>) => {
    const all = { apiKey: key.apiKey, response: "json", ...params };
    return new URLSearchParams({ ...all, signature: sign(canonicalString(all), key.secretKey) });
  };
  const call = async (params: Record<string, string>) => {
    const response = await fetch(`${endpoint}?${signed(params)}`);
    const body = (await response.json()) as Record<string, Record<string, unknown>>;
    if (!response.ok) throw new Error(`${params.command}: HTTP ${response.status} ${JSON.stringify(body)}`);
    return Object.values(body)[0] as Record<string, unknown>;
  };
  const timed = async (params: Record<string, string>) => {
    const started = performance.now();
    const answer = await call(params);
    return { seconds: (performance.now() - started) / 1000, answer };
  };
  const timedPost = async (params: Record<string, string>, wrongSignature = false) => {
    const body = signed(params);
    if (wrongSignature) body.set("signature", sign("not this request", key.secretKey));
    const started = performance.now();
    const response = await fetch(endpoint, { method: "POST", body });
    await response.arrayBuffer();
    return { seconds: (performance.now() - started) / 1000, status: response.status };
  };
  return { pid: api.pid, call, timed, timedPost, metrics: () => api.metrics(), stop: () => api.stop() };
}

/**
 * listVirtualMachines' latency with `size` VMs in the account, asked sequentially once the API
 * component's cache holds them all.
 */
export async function measureListVirtualMachines(
  api: CloudStackApi,
  size: number,
  requests: number,
): Promise<{ vms: number; latency: Summary; samples: number[] }> {
  await pollUntil(
    `the API component's cache to hold ${size} VMs`,
    async () => (await api.timed({ command: "listVirtualMachines", pagesize: "1" })).answer.count === size,
    { timeoutMs: 300_000, intervalMs: 500 },
  );
  for (let i = 0; i < 5; i++) await api.timed({ command: "listVirtualMachines" }); // warm-up
  const samples: number[] = [];
  for (let i = 0; i < requests; i++) {
    const { seconds, answer } = await api.timed({ command: "listVirtualMachines" });
    if (answer.count !== size) throw new Error(`listVirtualMachines counted ${answer.count}, not ${size}`);
    samples.push(seconds);
  }
  return { vms: size, latency: summarize(samples), samples };
}

export async function measureCloudStackApi(
  context: BenchContext,
  options: { sizes: readonly number[]; requests: number; concurrency: number; accounts: number },
): Promise<ApiResult> {
  const namespace = "bench-api";
  await context.namespace(namespace);
  const api = await startCloudStackApi(context, namespace);
  const roles = context.processRoles({ "API component": [api.pid] });
  const cpuBefore = sampleCpu(roles);
  const lists: ApiResult["listVirtualMachines"] = [];
  let created = 0;
  for (const size of options.sizes) {
    context.progress(`CloudStack API: ${size} VMs in the account`);
    const names = Array.from({ length: size - created }, (_, i) => `api-${created + i}`);
    await withConcurrency(names, options.concurrency, async (name) => {
      await context.client.create(Resources.virtualMachines, benchVm(name, namespace, "bench"));
    });
    created = size;
    lists.push(await measureListVirtualMachines(api, size, options.requests));
  }

  context.progress("CloudStack API: queryAsyncJobResult");
  const { answer } = await api.timed({ command: "listVirtualMachines", pagesize: "1" });
  const vmId = (answer.virtualmachine as { id: string }[])[0]?.id as string;
  const job = await api.call({ command: "stopVirtualMachine", id: vmId });
  const jobSamples: number[] = [];
  for (let i = 0; i < options.requests * 3; i++)
    jobSamples.push(
      (await api.timed({ command: "queryAsyncJobResult", jobid: job.jobid as string })).seconds,
    );
  const cpu = cpuUse(cpuBefore, sampleCpu(roles), created);
  context.progress("CloudStack API: a 1 MiB request with a wrong signature");
  const largeRequest = await measureLargeRequest(api, options.requests);
  context.progress("CloudStack API: listall across accounts");
  const listAll = await measureListAllReviews(context, api, options.accounts);
  const apiComponentRss = BenchContext.rss(api.pid);
  await api.stop();
  return {
    listVirtualMachines: lists,
    queryAsyncJobResult: summarize(jobSamples),
    largeRequest,
    listAll,
    apiComponentRss,
    cpu,
  };
}

/** The same 1 MiB listZones signed right and wrong, alternately, so both see the same machine. */
async function measureLargeRequest(api: CloudStackApi, requests: number): Promise<ApiResult["largeRequest"]> {
  // Form-encoded, `~`, `[` and `]` take three bytes each: about 1,000,000 bytes, under the 1 MiB limit.
  const params = { command: "listZones", junk: "~[*]".repeat(100_000) };
  const signed: number[] = [];
  const badSignature: number[] = [];
  for (let i = 0; i < requests; i++) {
    for (const [wrong, samples] of [
      [false, signed],
      [true, badSignature],
    ] as const) {
      const { seconds, status } = await api.timedPost(params, wrong);
      if (status !== (wrong ? 401 : 200)) throw new Error(`1 MiB listZones: HTTP ${status}`);
      samples.push(seconds);
    }
  }
  const bytes = new URLSearchParams(params).toString().length;
  return { bytes, signed: summarize(signed), badSignature: summarize(badSignature) };
}

const reviewsAsked = (metrics: MetricsSnapshot) =>
  metrics
    .sum("stratus_api_requests_total", (l) => (l.resource === "subjectaccessreviews" ? "" : undefined))
    .get("") ?? 0;

/** One VM in each of `accounts` other namespaces, then one listall as the (cluster-wide) admin. */
async function measureListAllReviews(
  context: BenchContext,
  api: CloudStackApi,
  accounts: number,
): Promise<ApiResult["listAll"]> {
  const namespaces = Array.from({ length: accounts }, (_, i) => `bench-account-${i}`);
  for (const namespace of namespaces) {
    await context.namespace(namespace);
    await context.client.create(Resources.virtualMachines, benchVm("vm", namespace, "bench"));
  }
  await pollUntil(
    "the API component's cache to hold every account's VM",
    async () => {
      const { answer } = await api.timed({ command: "listVirtualMachines", listall: "true", name: "vm" });
      return answer.count === accounts;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  // Past the decisions' time to live, so the listall below asks afresh, as a first one would.
  await sleep(DECISION_TTL_MS + 500);
  const before = reviewsAsked(await api.metrics());
  await api.call({ command: "listVirtualMachines", listall: "true" });
  // These accounts and the admin's own; the other rigs' namespaces hold VMs too, so at least that.
  return { accounts: accounts + 1, reviews: reviewsAsked(await api.metrics()) - before };
}
