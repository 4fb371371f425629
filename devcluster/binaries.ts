// Finds or builds the control-plane binaries: etcd, kube-apiserver, kube-controller-manager and
// kubectl. They are built from the upstream Go modules through the wrapper modules in go/, once per
// version, into a cache outside the repository; KUBEBUILDER_ASSETS (setup-envtest's layout) wins.
// The tests' own upstream servers (MinIO) are built the same way.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import { access, cp, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The versions Stratus is built and tested with; the wrapper modules in go/ pin exactly these. */
export const DEFAULT_VERSIONS = { kubernetes: "v1.37.2", etcd: "v3.7.3" } as const;

export interface ControlPlaneVersions {
  kubernetes: string;
  etcd: string;
}

export interface ControlPlaneBinaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubectl: string;
}

export type Progress = (message: string) => void;

/** A failure a person can act on: the message says what happened and what to do. */
export class ControlPlaneSetupError extends Error {
  override name = "ControlPlaneSetupError";
}

const KUBE_COMMANDS = ["kube-apiserver", "kube-controller-manager", "kubectl"] as const;
const WRAPPER_DIR = fileURLToPath(new URL("./go/", import.meta.url));
const COMPLETE_MARKER = "stratus-build.json";
const VERSION_PATTERN = /^v\d+\.\d+\.\d+$/;

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.STRATUS_CACHE_DIR) return env.STRATUS_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "stratus");
}

/** Versions from the environment (STRATUS_KUBE_VERSION, STRATUS_ETCD_VERSION), else the defaults. */
export function requestedVersions(env: NodeJS.ProcessEnv = process.env): ControlPlaneVersions {
  return {
    kubernetes: env.STRATUS_KUBE_VERSION || DEFAULT_VERSIONS.kubernetes,
    etcd: env.STRATUS_ETCD_VERSION || DEFAULT_VERSIONS.etcd,
  };
}

interface BuildRecord {
  component: "kubernetes" | "etcd" | TestTool;
  version: string;
  builtAt: string;
  seconds: number;
  files: Record<string, { bytes: number; sha256: string }>;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path)
      .on("data", (chunk) => hash.update(chunk))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}

/**
 * Checks a cache entry. Returns false when there is none (a build is needed); throws when one is
 * there but damaged, because silently rebuilding 15 minutes of work would hide a real problem.
 */
async function verifyCacheEntry(dir: string, files: readonly string[]): Promise<boolean> {
  let record: BuildRecord;
  try {
    record = JSON.parse(await readFile(join(dir, COMPLETE_MARKER), "utf8")) as BuildRecord;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw brokenCacheEntry(dir, `${COMPLETE_MARKER} is unreadable (${(error as Error).message})`);
  }
  for (const file of files) {
    const path = join(dir, file);
    const expected = record.files?.[file];
    if (!expected) throw brokenCacheEntry(dir, `${COMPLETE_MARKER} does not list ${file}`);
    if (!(await isExecutable(path))) throw brokenCacheEntry(dir, `${file} is missing or not executable`);
    const bytes = (await stat(path)).size;
    if (bytes !== expected.bytes) {
      throw brokenCacheEntry(dir, `${file} has ${bytes} bytes, the build recorded ${expected.bytes}`);
    }
  }
  return true;
}

function brokenCacheEntry(dir: string, reason: string): ControlPlaneSetupError {
  return new ControlPlaneSetupError(
    `The cached control-plane binaries in ${dir} are damaged: ${reason}.\n` +
      `Rebuild them with \`stratus cluster build --rebuild\` (or delete ${dir} and run again).`,
  );
}

function runGo(args: string[], cwd: string, onLine?: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("go", args, {
      cwd,
      env: { ...process.env, GOTOOLCHAIN: "local", CGO_ENABLED: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      if (onLine) for (const line of text.split("\n")) if (line.trim()) onLine(line);
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    child.on("error", (error: NodeJS.ErrnoException) => {
      reject(
        error.code === "ENOENT"
          ? new ControlPlaneSetupError(
              "Go is not installed, and it is needed once to build the control-plane binaries.\n" +
                "Install Go 1.26 or newer, or point KUBEBUILDER_ASSETS at a directory with etcd, " +
                "kube-apiserver, kube-controller-manager and kubectl.",
            )
          : error,
      );
    });
    child.on("close", (code) => {
      if (code === 0) resolve(output);
      else reject(new GoCommandError(`go ${args.join(" ")} (in ${cwd}) exited with ${code}`, output));
    });
  });
}

class GoCommandError extends Error {
  readonly output: string;
  constructor(message: string, output: string) {
    super(`${message}\n${output.trim().split("\n").slice(-15).join("\n")}`);
    this.output = output;
  }
}

function assertVersionSyntax(what: string, version: string): void {
  if (!VERSION_PATTERN.test(version)) {
    throw new ControlPlaneSetupError(
      `${what} version "${version}" is not a release version like ${what === "Kubernetes" ? DEFAULT_VERSIONS.kubernetes : DEFAULT_VERSIONS.etcd}.`,
    );
  }
}

/**
 * Prepares the Go wrapper module for a version. The default version uses the committed module
 * (go.mod + go.sum, reproducible); any other version gets a module generated the same way.
 */
async function prepareWrapperModule(
  component: "kube" | "etcd",
  version: string,
  scratch: string,
  progress: Progress,
): Promise<string> {
  const committed = join(WRAPPER_DIR, component);
  const pinned = component === "kube" ? DEFAULT_VERSIONS.kubernetes : DEFAULT_VERSIONS.etcd;
  const dir = join(scratch, `${component}-module`);
  await cp(committed, dir, { recursive: true });
  if (version === pinned) return dir;

  progress(`generating a wrapper module for ${component} ${version}`);
  const modulePath = component === "kube" ? "k8s.io/kubernetes" : "go.etcd.io/etcd/server/v3";
  let upstreamGoMod: string;
  try {
    const info = JSON.parse(await runGo(["mod", "download", "-json", `${modulePath}@${version}`], dir)) as {
      GoMod: string;
    };
    upstreamGoMod = await readFile(info.GoMod, "utf8");
  } catch (error) {
    if (error instanceof GoCommandError) {
      // `go mod download -json` reports the proxy's answer in the Error field of its JSON output.
      const reason = (() => {
        try {
          return String((JSON.parse(error.output) as { Error?: string }).Error ?? error.output);
        } catch {
          return error.output;
        }
      })();
      const what = component === "kube" ? "Kubernetes" : "etcd";
      throw new ControlPlaneSetupError(
        `${what} ${version} cannot be fetched from the Go module proxy; does that release exist?\n` +
          `Stratus is tested with Kubernetes ${DEFAULT_VERSIONS.kubernetes} and etcd ${DEFAULT_VERSIONS.etcd}; ` +
          "unset STRATUS_KUBE_VERSION / STRATUS_ETCD_VERSION to use them.\n" +
          `go said: ${reason.trim().replace(/\s*\n\s*/g, " ")}`,
      );
    }
    throw error;
  }
  let goMod = (await readFile(join(dir, "go.mod"), "utf8")).replaceAll(pinned, version);
  if (component === "kube") {
    // The staging modules are published as v0.<minor>.<patch> twins of the Kubernetes release.
    const stagingVersion = version.replace(/^v1\./, "v0.");
    const stagingModules = [...upstreamGoMod.matchAll(/^\s*(\S+) => \.\/staging\/src\/\S+$/gm)].map(
      (m) => m[1],
    );
    const replaces = stagingModules.map((module) => `\t${module} => ${module} ${stagingVersion}`).join("\n");
    goMod = goMod.replace(/replace \([\s\S]*?\n\)/, `replace (\n${replaces}\n)`);
    const goDirective = /^go (\S+)$/m.exec(upstreamGoMod)?.[1];
    if (goDirective) goMod = goMod.replace(/^go \S+$/m, `go ${goDirective}`);
  }
  await writeFile(join(dir, "go.mod"), goMod);
  await rm(join(dir, "go.sum"), { force: true });
  await runGo(["mod", "tidy"], dir);
  return dir;
}

function kubeVersionLdflags(version: string): string {
  const [, major, minor] = /^v(\d+)\.(\d+)/.exec(version) ?? [];
  const buildDate = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const stamps = ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"].flatMap((pkg) => [
    `-X ${pkg}.gitVersion=${version}`,
    `-X ${pkg}.gitMajor=${major}`,
    `-X ${pkg}.gitMinor=${minor}`,
    `-X ${pkg}.gitTreeState=clean`,
    `-X ${pkg}.buildDate=${buildDate}`,
  ]);
  return ["-s", "-w", ...stamps].join(" ");
}

/** Prints a line every 30 s while a long build runs, so a person knows it is alive. */
function heartbeat(progress: Progress, what: string): () => void {
  const started = Date.now();
  const timer = setInterval(() => {
    progress(`  still building ${what} (${Math.round((Date.now() - started) / 1000)} s)`);
  }, 30_000);
  timer.unref();
  return () => clearInterval(timer);
}

async function buildInto(
  component: "kubernetes" | "etcd",
  version: string,
  target: string,
  progress: Progress,
): Promise<void> {
  const scratch = await mkdtemp(join(cacheRoot(), `.build-${component}-${version}-`));
  const started = Date.now();
  try {
    const moduleDir = await prepareWrapperModule(
      component === "kubernetes" ? "kube" : "etcd",
      version,
      scratch,
      progress,
    );
    const out = join(scratch, "bin");
    await mkdir(out);
    const stop = heartbeat(progress, `${component} ${version}`);
    try {
      if (component === "kubernetes") {
        progress(`building kube-apiserver, kube-controller-manager and kubectl ${version} (first time only)`);
        await runGo(
          [
            "build",
            "-trimpath",
            "-ldflags",
            kubeVersionLdflags(version),
            "-o",
            `${out}/`,
            ...KUBE_COMMANDS.map((c) => `k8s.io/kubernetes/cmd/${c}`),
          ],
          moduleDir,
        );
      } else {
        progress(`building etcd ${version} (first time only)`);
        await runGo(
          ["build", "-trimpath", "-ldflags", "-s -w", "-o", join(out, "etcd"), "go.etcd.io/etcd/server/v3"],
          moduleDir,
        );
      }
    } finally {
      stop();
    }
    const files = component === "kubernetes" ? [...KUBE_COMMANDS] : ["etcd"];
    await commitBuild({ component, version, started, out, files, target }, progress);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Records what a build made beside its files, then moves them into the cache in one rename. */
async function commitBuild(
  build: {
    component: BuildRecord["component"];
    version: string;
    started: number;
    out: string;
    files: readonly string[];
    target: string;
  },
  progress: Progress,
): Promise<void> {
  const { component, version, out, target } = build;
  const record: BuildRecord = {
    component,
    version,
    builtAt: new Date().toISOString(),
    seconds: Math.round((Date.now() - build.started) / 1000),
    files: {},
  };
  for (const file of build.files) {
    const path = join(out, file);
    record.files[file] = { bytes: (await stat(path)).size, sha256: await sha256File(path) };
  }
  await writeFile(join(out, COMPLETE_MARKER), `${JSON.stringify(record, null, 2)}\n`);
  // The rename is the commit point: a build killed half-way leaves only scratch behind.
  await rm(target, { recursive: true, force: true });
  await rename(out, target);
  progress(`built ${component} ${version} in ${record.seconds} s -> ${target}`);
}

/**
 * Upstream servers only the tests run, pinned by their committed wrapper module in go/: MinIO, the
 * S3-compatible store snapshots are kept in.
 */
const TEST_TOOLS = {
  minio: { version: "v0.0.0-20260212201848-7aac2a2c5b7c", main: "github.com/minio/minio" },
} as const;
export type TestTool = keyof typeof TEST_TOOLS;

/** The test tool's binary, built once into the cache (as the control plane's are). */
export async function ensureTestTool(
  tool: TestTool,
  options: { progress?: Progress; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  const { version, main } = TEST_TOOLS[tool];
  const progress = options.progress ?? (() => {});
  const root = cacheRoot(options.env);
  const target = join(root, `${tool}-${version}`);
  if (await verifyCacheEntry(target, [tool])) return join(target, tool);
  await mkdir(root, { recursive: true });
  const scratch = await mkdtemp(join(root, `.build-${tool}-`));
  const started = Date.now();
  try {
    const moduleDir = join(scratch, "module");
    await cp(join(WRAPPER_DIR, tool), moduleDir, { recursive: true });
    const out = join(scratch, "bin");
    await mkdir(out);
    progress(`building ${tool} for the tests (first time only)`);
    const stop = heartbeat(progress, tool);
    try {
      await runGo(["build", "-trimpath", "-ldflags", "-s -w", "-o", join(out, tool), main], moduleDir);
    } finally {
      stop();
    }
    await commitBuild({ component: tool, version, started, out, files: [tool], target }, progress);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return join(target, tool);
}

export interface EnsureBinariesOptions {
  versions?: ControlPlaneVersions;
  progress?: Progress;
  /** Throw the damaged cache entries away and build again. */
  rebuild?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Returns the four binaries, building whatever is missing. */
export async function ensureBinaries(options: EnsureBinariesOptions = {}): Promise<ControlPlaneBinaries> {
  const env = options.env ?? process.env;
  const versions = options.versions ?? requestedVersions(env);
  const progress = options.progress ?? (() => {});
  assertVersionSyntax("Kubernetes", versions.kubernetes);
  assertVersionSyntax("etcd", versions.etcd);

  const fromAssets = await binariesFromKubebuilderAssets(env.KUBEBUILDER_ASSETS);
  const needKube = !(fromAssets.kubeApiserver && fromAssets.kubeControllerManager && fromAssets.kubectl);
  const root = cacheRoot(env);
  await mkdir(root, { recursive: true });
  const kubeDir = join(root, `kube-${versions.kubernetes}`);
  const etcdDir = join(root, `etcd-${versions.etcd}`);

  const ensure = async (component: "kubernetes" | "etcd", dir: string, files: readonly string[]) => {
    if (options.rebuild) await rm(dir, { recursive: true, force: true });
    if (!(await verifyCacheEntry(dir, files))) await buildInto(component, versions[component], dir, progress);
  };
  if (needKube) await ensure("kubernetes", kubeDir, KUBE_COMMANDS);
  if (!fromAssets.etcd) await ensure("etcd", etcdDir, ["etcd"]);

  return {
    etcd: fromAssets.etcd ?? join(etcdDir, "etcd"),
    kubeApiserver: fromAssets.kubeApiserver ?? join(kubeDir, "kube-apiserver"),
    kubeControllerManager: fromAssets.kubeControllerManager ?? join(kubeDir, "kube-controller-manager"),
    kubectl: fromAssets.kubectl ?? join(kubeDir, "kubectl"),
  };
}

/**
 * setup-envtest ships etcd, kube-apiserver and kubectl, but no kube-controller-manager; the
 * Kubernetes binaries are taken from there only when all three are present, so versions never mix.
 */
async function binariesFromKubebuilderAssets(
  dir: string | undefined,
): Promise<Partial<ControlPlaneBinaries>> {
  if (!dir) return {};
  const found = async (name: string) => ((await isExecutable(join(dir, name))) ? join(dir, name) : undefined);
  const etcd = await found("etcd");
  const kubeApiserver = await found("kube-apiserver");
  const kubeControllerManager = await found("kube-controller-manager");
  const kubectl = await found("kubectl");
  if (!etcd && !kubeApiserver) {
    throw new ControlPlaneSetupError(
      `KUBEBUILDER_ASSETS=${dir} holds neither etcd nor kube-apiserver; point it at setup-envtest's ` +
        "binary directory or unset it to build the binaries.",
    );
  }
  const result: Partial<ControlPlaneBinaries> = {};
  if (etcd) result.etcd = etcd;
  if (kubeApiserver && kubeControllerManager && kubectl) {
    Object.assign(result, { kubeApiserver, kubeControllerManager, kubectl });
  }
  return result;
}
