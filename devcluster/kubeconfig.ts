// Kubeconfig files for the local control plane: one per identity, credentials inline.
import { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";

export interface KubeconfigParameters {
  server: string;
  caPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  /** Also the context and user name inside the file. */
  name: string;
}

const base64 = (text: string) => Buffer.from(text).toString("base64");

export function renderKubeconfig(p: KubeconfigParameters): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      { name: "stratus", cluster: { server: p.server, "certificate-authority-data": base64(p.caPem) } },
    ],
    users: [
      {
        name: p.name,
        user: {
          "client-certificate-data": base64(p.clientCertPem),
          "client-key-data": base64(p.clientKeyPem),
        },
      },
    ],
    contexts: [{ name: p.name, context: { cluster: "stratus", user: p.name } }],
    "current-context": p.name,
    preferences: {},
  });
}

export function loadKubeConfig(path: string): KubeConfig {
  const config = new KubeConfig();
  config.loadFromFile(path);
  return config;
}
