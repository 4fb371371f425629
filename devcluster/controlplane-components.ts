// The three processes of a local control plane (etcd, kube-apiserver, kube-controller-manager):
// the command line each runs with on loopback, and how each is known to be ready to serve.
import { request } from "node:https";
import { join } from "node:path";
import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { isAlive } from "../runtime/process-alive.ts";
import { ControlPlaneSetupError } from "./binaries.ts";
import type { ControlPlaneState } from "./controlplane-state.ts";
import { tail } from "./processes.ts";

export const COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager"] as const;
export type ComponentName = (typeof COMPONENTS)[number];

/** The binary and arguments of `component` for the control plane in `dir`. */
export function commandLine(
  dir: string,
  state: ControlPlaneState,
  component: ComponentName,
  apiserverPort = state.ports.apiserver,
): [string, string[]] {
  const { ports, binaries } = state;
  const pki = (file: string) => join(dir, "pki", file);
  switch (component) {
    case "etcd":
      return [
        binaries.etcd,
        [
          `--name=stratus`,
          `--data-dir=${join(dir, "etcd-data")}`,
          `--listen-client-urls=http://127.0.0.1:${ports.etcdClient}`,
          `--advertise-client-urls=http://127.0.0.1:${ports.etcdClient}`,
          `--listen-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
          `--initial-advertise-peer-urls=http://127.0.0.1:${ports.etcdPeer}`,
          `--initial-cluster=stratus=http://127.0.0.1:${ports.etcdPeer}`,
          ...(state.unsafeNoFsync ? ["--unsafe-no-fsync"] : []),
        ],
      ];
    case "kube-apiserver":
      return [
        binaries.kubeApiserver,
        [
          `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
          "--bind-address=127.0.0.1",
          // An explicit address: the machine may have no default route to derive one from.
          "--advertise-address=127.0.0.1",
          `--secure-port=${apiserverPort}`,
          `--cert-dir=${join(dir, "pki")}`,
          `--tls-cert-file=${pki("apiserver.crt")}`,
          `--tls-private-key-file=${pki("apiserver.key")}`,
          `--client-ca-file=${pki("ca.crt")}`,
          "--authorization-mode=RBAC",
          "--allow-privileged=true",
          `--service-account-issuer=https://127.0.0.1:${ports.apiserver}`,
          `--service-account-key-file=${pki("sa.pub")}`,
          `--service-account-signing-key-file=${pki("sa.key")}`,
          "--service-cluster-ip-range=10.0.0.0/24",
          // Loopback Endpoints for the kubernetes Service would be rejected in a loop.
          "--endpoint-reconciler-type=none",
          `--requestheader-client-ca-file=${pki("front-proxy-ca.crt")}`,
          "--requestheader-allowed-names=front-proxy-client",
          "--requestheader-username-headers=X-Remote-User",
          "--requestheader-group-headers=X-Remote-Group",
          "--requestheader-extra-headers-prefix=X-Remote-Extra-",
          `--proxy-client-cert-file=${pki("front-proxy-client.crt")}`,
          `--proxy-client-key-file=${pki("front-proxy-client.key")}`,
        ],
      ];
    case "kube-controller-manager":
      return [
        binaries.kubeControllerManager,
        [
          `--kubeconfig=${join(dir, "kubeconfigs", "kube-controller-manager.kubeconfig")}`,
          `--service-account-private-key-file=${pki("sa.key")}`,
          `--root-ca-file=${pki("ca.crt")}`,
          `--cluster-signing-cert-file=${pki("ca.crt")}`,
          `--cluster-signing-key-file=${pki("ca.key")}`,
          "--use-service-account-credentials",
          "--controllers=*",
          // Accounts' limits on Stratus kinds (ResourceQuota count/<kind>.stratus.io): a quota
          // written before the quota controller discovered the CRDs (30 s after start) is counted
          // at its next full resync, every 30 s here rather than 5 min.
          "--resource-quota-sync-period=30s",
          "--leader-elect=false",
          "--bind-address=127.0.0.1",
          "--secure-port=0",
        ],
      ];
  }
}

/** What a readiness probe reads of its control plane; getters, read at each probe. */
export interface ProbedControlPlane {
  readonly etcdEndpoint: string;
  readonly server: string;
  readonly caPem: string;
  readonly kubeConfig: KubeConfig;
}

export function readinessProbe(
  component: ComponentName,
  controlPlane: ProbedControlPlane,
): () => Promise<boolean> {
  return {
    etcd: async () => {
      const response = await fetch(`${controlPlane.etcdEndpoint}/health`);
      return response.ok && ((await response.json()) as { health?: string }).health === "true";
    },
    "kube-apiserver": () => isApiServerReady(controlPlane.server, controlPlane.caPem),
    // The service-account controller creating `default` proves the controller manager works.
    "kube-controller-manager": async () => {
      await controlPlane.kubeConfig
        .makeApiClient(CoreV1Api)
        .readNamespacedServiceAccount({ name: "default", namespace: "default" });
      return true;
    },
  }[component];
}

/** Polls `probe` until it succeeds; fails at once, with the log's end, if the process died. */
export async function waitUntil(
  what: string,
  pid: () => number | undefined,
  logPath: string,
  probe: () => Promise<boolean>,
  readyTimeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    const current = pid();
    if (current === undefined || !isAlive(current)) {
      throw new ControlPlaneSetupError(
        `${what} exited during start-up. The end of ${logPath}:\n${await tail(logPath, 20)}`,
      );
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) {
      throw new ControlPlaneSetupError(
        `${what} was not ready after ${readyTimeoutMs / 1000} s. The end of ${logPath}:\n${await tail(logPath, 20)}`,
      );
    }
    await sleep(250);
  }
}

export async function isApiServerReady(server: string, caPem: string): Promise<boolean> {
  return (await httpsGet(`${server}/readyz`, caPem)).status === 200;
}

export function httpsGet(url: string, caPem: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: caPem, timeout: 5_000 }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => {
        body += chunk;
      });
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`timeout: GET ${url}`)));
    req.on("error", reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
