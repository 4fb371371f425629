// The credentials a local control plane keeps in its directory: CAs, serving and client
// certificates and the service-account key under pki/, one kubeconfig per identity under
// kubeconfigs/. Made once on first start; a restart reuses them (devcluster/pki.ts signs them).
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Progress } from "./binaries.ts";
import { renderKubeconfig } from "./kubeconfig.ts";
import {
  createCertificateAuthority,
  createServiceAccountSigningKey,
  issueCertificate,
  loadCertificateAuthority,
  type PemPair,
} from "./pki.ts";

async function pem(dir: string, name: string): Promise<PemPair> {
  const pki = join(dir, "pki");
  return {
    certPem: await readFile(join(pki, `${name}.crt`), "utf8"),
    keyPem: await readFile(join(pki, `${name}.key`), "utf8"),
  };
}

/** Creates CAs, serving and client certificates and kubeconfigs once; a restart reuses them. */
export async function writeCredentials(dir: string, server: string, progress: Progress): Promise<void> {
  const pki = join(dir, "pki");
  await mkdir(pki, { recursive: true, mode: 0o700 });
  await mkdir(join(dir, "kubeconfigs"), { recursive: true, mode: 0o700 });
  await mkdir(join(dir, "logs"), { recursive: true });
  if (!existsSync(join(pki, "sa.pub"))) {
    progress("generating certificates");
    const save = async (name: string, pair: PemPair) => {
      await writeFile(join(pki, `${name}.crt`), pair.certPem);
      await writeFile(join(pki, `${name}.key`), pair.keyPem, { mode: 0o600 });
    };
    const ca = await createCertificateAuthority("stratus-cluster-ca");
    const frontProxyCa = await createCertificateAuthority("stratus-front-proxy-ca");
    await save("ca", ca);
    await save("front-proxy-ca", frontProxyCa);
    await save(
      "apiserver",
      await issueCertificate(ca, {
        commonName: "kube-apiserver",
        usage: "server",
        dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ipAddresses: ["127.0.0.1", "10.0.0.1"],
      }),
    );
    await save(
      "front-proxy-client",
      await issueCertificate(frontProxyCa, { commonName: "front-proxy-client", usage: "client" }),
    );
    const serviceAccountKey = await createServiceAccountSigningKey();
    await writeFile(join(pki, "sa.key"), serviceAccountKey.privateKeyPem, { mode: 0o600 });
    await writeFile(join(pki, "sa.pub"), serviceAccountKey.publicKeyPem);
    // kube-controller-manager runs as its own user, which the bootstrap RBAC policy provides for.
    await writeClientKubeconfig(dir, server, "kube-controller-manager", "system:kube-controller-manager", []);
    await writeClientKubeconfig(dir, server, "admin", "admin", ["system:masters"]);
  }
}

/** Issues a client certificate for `CN=user, O=groups` and writes kubeconfigs/<fileName>.kubeconfig. */
export async function writeClientKubeconfig(
  dir: string,
  server: string,
  fileName: string,
  user: string,
  groups: readonly string[],
): Promise<string> {
  const ca = await pem(dir, "ca");
  const pair = await issueCertificate(await loadCertificateAuthority(ca), {
    commonName: user,
    organizations: groups,
    usage: "client",
  });
  const path = join(dir, "kubeconfigs", `${fileName}.kubeconfig`);
  const kubeconfig = renderKubeconfig({
    server,
    caPem: ca.certPem,
    clientCertPem: pair.certPem,
    clientKeyPem: pair.keyPem,
    name: user,
  });
  await writeFile(path, kubeconfig, { mode: 0o600 });
  return path;
}
