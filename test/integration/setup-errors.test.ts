// Bad set-up input ends in a message that says what to do, never in a stack trace.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlaneSetupError, ensureBinaries } from "../../devcluster/binaries.ts";
import { run } from "./support.ts";

const stratus = (args: string[], env: NodeJS.ProcessEnv) =>
  run(process.execPath, ["cli/stratus.ts", ...args], { env: { ...process.env, ...env } });

describe("control-plane set-up errors", () => {
  let cache: string;

  beforeAll(async () => {
    cache = await mkdtemp(join(tmpdir(), "stratus-cache-test-"));
  });
  afterAll(async () => {
    await rm(cache, { recursive: true, force: true });
  });

  it("names a Kubernetes version that does not exist and how to get back to a good one", async () => {
    const env = { STRATUS_CACHE_DIR: cache, STRATUS_KUBE_VERSION: "v1.99.0", KUBEBUILDER_ASSETS: "" };
    const error = await ensureBinaries({ env: { ...process.env, ...env } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ControlPlaneSetupError);
    expect((error as Error).message).toMatch(
      /Kubernetes v1\.99\.0 cannot be fetched from the Go module proxy/,
    );
    expect((error as Error).message).toMatch(/unset STRATUS_KUBE_VERSION/);

    const cli = await stratus(["cluster", "build"], env);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toMatch(/^stratus: Kubernetes v1\.99\.0 cannot be fetched/m);
    expect(cli.stderr).not.toMatch(/\n\s+at /);
  });

  it("refuses a version that is not a release number", async () => {
    const cli = await stratus(["cluster", "build"], {
      STRATUS_CACHE_DIR: cache,
      STRATUS_ETCD_VERSION: "latest",
    });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toBe('stratus: etcd version "latest" is not a release version like v3.7.3.\n');
  });

  it("reports a damaged cache entry with the command that repairs it", async () => {
    const entry = join(cache, "etcd-v3.7.3");
    await mkdir(entry, { recursive: true });
    await writeFile(join(entry, "etcd"), "#!/bin/sh\n", { mode: 0o755 });
    await writeFile(
      join(entry, "stratus-build.json"),
      JSON.stringify({ files: { etcd: { bytes: 31_000_000, sha256: "" } } }),
    );
    // Kubernetes binaries from a (fake) envtest directory, so that only the etcd entry is examined.
    const assets = join(cache, "assets");
    await mkdir(assets);
    for (const name of ["kube-apiserver", "kube-controller-manager", "kubectl"]) {
      await writeFile(join(assets, name), "#!/bin/sh\n", { mode: 0o755 });
    }

    const cli = await stratus(["cluster", "build"], { STRATUS_CACHE_DIR: cache, KUBEBUILDER_ASSETS: assets });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain(
      `The cached control-plane binaries in ${entry} are damaged: etcd has 10 bytes, the build recorded 31000000`,
    );
    expect(cli.stderr).toContain("stratus cluster build --rebuild");
    expect(cli.stderr).not.toMatch(/\n\s+at /);
  });
});
