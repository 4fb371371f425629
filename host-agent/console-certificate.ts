// The console server's TLS certificate: self-signed, made once per host by openssl (Debian's, as
// for the local control plane) and published in Host status, where the API component takes it as
// the only certificate it trusts for that host. Only the host's agent writes that status field.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export async function ensureConsoleCertificate(
  dir: string,
  hostName: string,
): Promise<{ cert: string; key: string }> {
  const certFile = join(dir, "console-tls.crt");
  const keyFile = join(dir, "console-tls.key");
  // The certificate is renamed into place last: an agent killed halfway makes a new pair.
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    await run("openssl", [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-days",
      "3650",
      "-subj",
      `/CN=stratus-console-${hostName}`.slice(0, 64),
      "-keyout",
      `${keyFile}.new`,
      "-out",
      `${certFile}.new`,
    ]);
    await rename(`${keyFile}.new`, keyFile);
    await rename(`${certFile}.new`, certFile);
  }
  return { cert: await readFile(certFile, "utf8"), key: await readFile(keyFile, "utf8") };
}
