// What `stratus up` puts in a new cloud: the names it seeds, the catalogue (zone, offerings, the
// tiny template) and the default network, applied so a second `stratus up` changes nothing, an
// API key for CloudStack clients, and the first VM's manifest it writes for `kubectl apply`.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";
import { API_KEY_LABEL, SECRET } from "../apiserver/api.ts";
import { type Network, Resources } from "../crds/index.ts";
import { isNotFound, type KubeClient, type KubeObject, type ResourceType } from "../runtime/client.ts";

const run = promisify(execFile);

/** The names `stratus up` seeds; `first-vm.yaml` and the printed commands use them. */
export const SEED = {
  zone: "local",
  namespace: "default",
  network: "default",
  serviceOffering: "tiny",
  diskOffering: "small-disk",
  template: "tiny-linux",
  keysNamespace: "stratus-api-keys",
  apiKeySecret: "stratus-up-admin",
  fieldManager: "stratus-up",
  /**
   * The host's CPU overcommit (CloudStack's cpu.overprovisioning.factor): a laptop's few cores
   * would otherwise take only as many 1-vCPU VMs as it has cores. Set when the Host is first made.
   */
  cpuOvercommitRatio: 4,
} as const;

/** The catalogue and the default network, applied (so a second `stratus up` changes nothing). */
export async function seed(client: KubeClient, tinyDisk: string, secondary: string): Promise<void> {
  const existing = <T extends KubeObject>(type: ResourceType, name: string, namespace?: string) =>
    client
      .get<T>(type, name, namespace)
      .catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error)));
  const apply = (type: ResourceType, object: KubeObject & { spec: object }) =>
    client.apply(
      type,
      { apiVersion: "stratus.io/v1alpha1", kind: type.kind, ...object },
      { fieldManager: SEED.fieldManager },
    );
  await apply(Resources.zones, {
    metadata: { name: SEED.zone },
    spec: {
      displayName: "Local zone (stratus up)",
      secondaryStorage: { path: secondary },
      // Clear of the control plane's service range (10.0.0.0/24); freeSubnet picks from here.
      guestCidrs: [LOCAL_GUEST_CIDR],
      vlanRange: "100-999",
    },
  });
  await apply(Resources.serviceOfferings, {
    metadata: { name: SEED.serviceOffering },
    spec: { displayName: "Tiny (1 vCPU, 128 MiB)", cpu: 1, memory: "128Mi" },
  });
  await apply(Resources.serviceOfferings, {
    metadata: { name: "small" },
    spec: { displayName: "Small (1 vCPU, 512 MiB)", cpu: 1, memory: "512Mi" },
  });
  await apply(Resources.diskOfferings, {
    metadata: { name: SEED.diskOffering },
    spec: { displayName: "Small disk (1 GiB)", size: "1Gi" },
  });
  // A template's image cannot change (its VMs' disks are made from it): one made before stays.
  if (!(await existing(Resources.templates, SEED.template)))
    await apply(Resources.templates, {
      metadata: { name: SEED.template },
      spec: {
        displayName: "Tiny Linux (busybox on a 64 MiB disk, boots in seconds)",
        osType: "Other Linux (64-bit)",
        format: "qcow2",
        source: { hostPath: tinyDisk },
      },
    });
  // A CIDR is fixed once chosen: an existing default network (and its VMs' addresses) stays as it is.
  const network = await existing<Network>(Resources.networks, SEED.network, SEED.namespace);
  await apply(Resources.networks, {
    metadata: { name: SEED.network, namespace: SEED.namespace },
    spec: { zone: SEED.zone, cidr: network?.spec.cidr ?? (await freeSubnet()) },
  });
}

/**
 * A fresh API key Secret (in `keysNamespace`) for a Kubernetes user acting in `account` (a
 * namespace); `stratus up` issues one for `admin` in system:masters (CloudStack's root admin).
 */
export async function issueApiKey(
  client: KubeClient,
  key: { name: string; keysNamespace: string; user: string; groups: string[]; account: string },
): Promise<{ apiKey: string; secretKey: string }> {
  const apiKey = randomBytes(24).toString("base64url");
  const secretKey = randomBytes(32).toString("base64url");
  await client.apply(
    SECRET,
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: key.name, namespace: key.keysNamespace, labels: { [API_KEY_LABEL]: "true" } },
      stringData: { apiKey, secretKey, user: key.user, groups: key.groups.join(","), account: key.account },
    } as KubeObject & Record<string, unknown>,
    { fieldManager: SEED.fieldManager },
  );
  return { apiKey, secretKey };
}

/** Where the local zone's tenants put their networks. */
export const LOCAL_GUEST_CIDR = "10.240.0.0/12";

/** The first 10.250+n.0.0/24 no route on this machine covers (the default network's CIDR). */
export async function freeSubnet(): Promise<string> {
  const routes = await run("ip", ["-4", "route"]).then(
    (r) => r.stdout,
    () => "",
  );
  for (let second = 250; second < 255; second++) {
    if (!routes.includes(`10.${second}.`)) return `10.${second}.0.0/24`;
  }
  return "10.255.0.0/24";
}

/** The manifest `stratus up` writes to first-vm.yaml. */
export const FIRST_VM = `# Written by \`stratus up\`: a VM from the tiny template on the default network.
apiVersion: stratus.io/v1alpha1
kind: VirtualMachine
metadata:
  name: first-vm
  namespace: ${SEED.namespace}
spec:
  zone: ${SEED.zone}
  serviceOffering: ${SEED.serviceOffering}
  template: ${SEED.template}
  nics:
    - name: eth0
      network: ${SEED.network}
`;
