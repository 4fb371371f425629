// The aggregated API subresources.stratus.io (VM console, start/stop/restart) registered with a
// local control plane the way the manifests register it in a cluster: a serving certificate from
// a fresh CA (the APIService's caBundle), a Service for the APIService (ExternalName: this
// machine), and the APIService itself, waited on until the aggregator reports it Available.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SUBRESOURCE_GROUP, SUBRESOURCE_VERSION } from "../apiserver/subresources.ts";
import type { KubeClient, KubeObject, ResourceType } from "../runtime/client.ts";
import { pollUntil } from "../runtime/time.ts";
import { createCertificateAuthority, issueCertificate } from "./pki.ts";
import { freePort } from "./ports.ts";

export const APISERVICE: ResourceType = {
  group: "apiregistration.k8s.io",
  version: "v1",
  plural: "apiservices",
  kind: "APIService",
  namespaced: false,
};
const SERVICE: ResourceType = {
  group: "",
  version: "v1",
  plural: "services",
  kind: "Service",
  namespaced: true,
};
export const SUBRESOURCE_APISERVICE = `${SUBRESOURCE_VERSION}.${SUBRESOURCE_GROUP}`;
const SERVICE_NAME = "stratus-subresources";

export interface LocalSubresources {
  /** stratus-apiserver flags: where to serve the aggregated API, with which certificate. */
  args: string[];
  port: number;
  caPem: string;
  namespace: string;
}

/** A serving certificate in `dir` and the flags for stratus-apiserver to serve with it. */
export async function prepareSubresources(options: {
  namespace: string;
  dir: string;
}): Promise<LocalSubresources> {
  const ca = await createCertificateAuthority("stratus-subresources-ca");
  const serviceHost = `${SERVICE_NAME}.${options.namespace}.svc`;
  const serving = await issueCertificate(ca, {
    commonName: serviceHost,
    usage: "server",
    dnsNames: [serviceHost, "localhost"],
  });
  const certFile = join(options.dir, "subresources.crt");
  const keyFile = join(options.dir, "subresources.key");
  await writeFile(certFile, serving.certPem);
  await writeFile(keyFile, serving.keyPem, { mode: 0o600 });
  const port = await freePort();
  return {
    args: [
      `--subresources-listen=127.0.0.1:${port}`,
      `--tls-cert-file=${certFile}`,
      `--tls-key-file=${keyFile}`,
    ],
    port,
    caPem: ca.certPem,
    namespace: options.namespace,
  };
}

/** Registers the served API with the aggregator and waits until it is Available. */
export async function registerSubresources(
  client: KubeClient,
  served: LocalSubresources,
  fieldManager: string,
): Promise<void> {
  await client.apply(
    SERVICE,
    {
      metadata: { name: SERVICE_NAME, namespace: served.namespace },
      spec: { type: "ExternalName", externalName: "localhost" },
    },
    { fieldManager },
  );
  await client.apply(
    APISERVICE,
    {
      metadata: { name: SUBRESOURCE_APISERVICE },
      spec: {
        group: SUBRESOURCE_GROUP,
        version: SUBRESOURCE_VERSION,
        service: { namespace: served.namespace, name: SERVICE_NAME, port: served.port },
        caBundle: Buffer.from(served.caPem).toString("base64"),
        groupPriorityMinimum: 1000,
        versionPriority: 15,
      },
    },
    { fieldManager },
  );
  await pollUntil(
    `the aggregated API ${SUBRESOURCE_APISERVICE} to be Available`,
    async () => {
      const service = await client.get<
        KubeObject & { status?: { conditions?: { type: string; status: string }[] } }
      >(APISERVICE, SUBRESOURCE_APISERVICE);
      return service.status?.conditions?.some((c) => c.type === "Available" && c.status === "True") ?? false;
    },
    { timeoutMs: 60_000 },
  );
}
