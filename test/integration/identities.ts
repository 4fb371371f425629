// Real identities for tests: the manifests' ServiceAccounts, roles and admission policies applied to
// the shared API server, and kubeconfigs holding tokens of those ServiceAccounts (TokenRequest API).
// A host agent's token is bound to a pod on a node, so it names the node, as the DaemonSet's do.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { NODE } from "../../crds/cluster-ranges.ts";
import { isAlreadyExists, KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { RBAC } from "./cloudstack-accounts.ts";
import { kubectl, sharedControlPlane, waitFor } from "./support.ts";

export const POD: ResourceType = { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true };
export const HOST_AGENT = "stratus-host-agent";
const VALIDATING_POLICY: ResourceType = {
  group: "admissionregistration.k8s.io",
  version: "v1",
  plural: "validatingadmissionpolicies",
  kind: "ValidatingAdmissionPolicy",
  namespaced: false,
};

/** kube-apiserver's admission plugins load changed policies this often (policy_source.go). */
const POLICY_REFRESH_MS = 1_000;

/**
 * Applies manifests/base files (namespaces, RBAC, the host-agent admission policy) to the shared API
 * server; when that changed a policy, waits until admission enforces the new one.
 */
export async function applyManifests(
  files = ["namespace.yaml", "rbac.yaml", "admission.yaml"],
): Promise<void> {
  const controlPlane = await sharedControlPlane();
  const admin = new KubeClient(controlPlane.kubeConfig);
  const generations = async () =>
    (await admin.list(VALIDATING_POLICY)).items
      .map((p) => `${p.metadata.name}/${p.metadata.generation}`)
      .join();
  const before = await generations();
  for (const file of files) {
    const applied = await kubectl(controlPlane.kubeconfigPath, [
      "apply",
      "--server-side",
      "-f",
      `manifests/base/${file}`,
    ]);
    if (applied.code !== 0) throw new Error(`kubectl apply ${file}: ${applied.stderr}`);
  }
  if ((await generations()) !== before) {
    await waitFor("the admission policies type-checked", async () =>
      (
        await admin.list<KubeObject & { status?: { observedGeneration?: number } }>(VALIDATING_POLICY)
      ).items.every((p) => p.status?.observedGeneration === p.metadata.generation),
    );
    // No API says which version admission enforces: it reloads within one refresh period.
    await new Promise((resolve) => setTimeout(resolve, 2 * POLICY_REFRESH_MS));
  }
  await admin.close();
}

export class TestIdentities {
  private readonly admin: KubeClient;
  private readonly workDir: string;
  private readonly nodes: string[] = [];

  constructor(admin: KubeClient, workDir: string) {
    this.admin = admin;
    this.workDir = workDir;
  }

  /** A kubeconfig holding a token of the ServiceAccount in stratus-system, optionally bound to a pod. */
  async serviceAccount(serviceAccount: string, boundPod?: KubeObject): Promise<string> {
    const request = await this.admin.request<{ status: { token: string } }>(
      "POST",
      `/api/v1/namespaces/stratus-system/serviceaccounts/${serviceAccount}/token`,
      {
        verb: "create",
        resource: "serviceaccounts/token",
        body: {
          apiVersion: "authentication.k8s.io/v1",
          kind: "TokenRequest",
          spec: {
            expirationSeconds: 3600,
            ...(boundPod
              ? {
                  boundObjectRef: {
                    apiVersion: "v1",
                    kind: "Pod",
                    name: boundPod.metadata.name,
                    uid: boundPod.metadata.uid,
                  },
                }
              : {}),
          },
        },
      },
    );
    const cluster = (await sharedControlPlane()).kubeConfig.getCurrentCluster();
    const path = join(this.workDir, `${serviceAccount}-${boundPod?.metadata.name ?? "sa"}.kubeconfig`);
    await writeFile(
      path,
      stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [
          { name: "c", cluster: { server: cluster?.server, "certificate-authority-data": cluster?.caData } },
        ],
        users: [{ name: serviceAccount, user: { token: request.status.token } }],
        contexts: [{ name: "c", context: { cluster: "c", user: serviceAccount } }],
        "current-context": "c",
      }),
      { mode: 0o600 },
    );
    return path;
  }

  /**
   * The host agent of `node`: a Node, a pod of the agent on it, and a token bound to that pod. With
   * `leaseNamespace` the agent may also renew its heartbeat Lease there (a test's own namespace).
   */
  async hostAgent(node: string, options: { leaseNamespace?: string } = {}): Promise<string> {
    await this.admin.create(NODE, { metadata: { name: node } } as KubeObject);
    this.nodes.push(node);
    const pod = await this.admin.create(POD, {
      metadata: { name: `agent-${node}`, namespace: "stratus-system" },
      spec: {
        nodeName: node,
        serviceAccountName: HOST_AGENT,
        containers: [{ name: "agent", image: "stratus/host-agent" }],
      },
    } as KubeObject);
    const namespace = options.leaseNamespace;
    if (namespace && namespace !== "stratus-system") await this.leasesIn(namespace);
    return this.serviceAccount(HOST_AGENT, pod);
  }

  /** Removes the pods and nodes made for host agents. */
  async cleanup(): Promise<void> {
    for (const node of this.nodes.splice(0)) {
      await this.admin.delete(POD, `agent-${node}`, "stratus-system").catch(() => undefined);
      await this.admin.delete(NODE, node).catch(() => undefined);
    }
  }

  private async leasesIn(namespace: string): Promise<void> {
    const role = { metadata: { name: "stratus-leases", namespace } };
    await this.admin
      .create(RBAC("v1", "roles"), {
        ...role,
        rules: [
          {
            apiGroups: ["coordination.k8s.io"],
            resources: ["leases"],
            verbs: ["get", "list", "watch", "create", "update"],
          },
        ],
      } as KubeObject)
      .catch(unlessExists); // one per namespace: a second agent finds it there
    await this.admin
      .create(RBAC("v1", "rolebindings"), {
        metadata: { name: "stratus-host-agent-leases", namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "stratus-leases" },
        subjects: [{ kind: "ServiceAccount", name: HOST_AGENT, namespace: "stratus-system" }],
      } as KubeObject)
      .catch(unlessExists);
  }
}

function unlessExists(error: unknown): undefined {
  if (!isAlreadyExists(error)) throw error;
  return undefined;
}
