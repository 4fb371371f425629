// An extra kube-apiserver next to a LocalControlPlane's own, on the same etcd: tests cut a client
// off from one API server (or freeze it) while others keep changing the cluster, as in HA.
import type { ChildProcess } from "node:child_process";
import { isAlive } from "../runtime/process-alive.ts";
import { terminate } from "./processes.ts";

/** An extra kube-apiserver of a LocalControlPlane; stop/start keep its port, pause freezes it. */
export class ApiServerReplica {
  readonly server: string;
  /** An admin kubeconfig that talks to this replica only. */
  readonly kubeconfigPath: string;
  private readonly launchProcess: () => Promise<ChildProcess>;
  private child: ChildProcess | undefined;

  constructor(server: string, kubeconfigPath: string, launchProcess: () => Promise<ChildProcess>) {
    this.server = server;
    this.kubeconfigPath = kubeconfigPath;
    this.launchProcess = launchProcess;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    if (this.child?.pid !== undefined && isAlive(this.child.pid)) return;
    this.child = await this.launchProcess();
  }

  async stop(): Promise<void> {
    this.resume(); // a stopped process cannot act on SIGTERM
    if (this.child?.pid !== undefined) await terminate(this.child.pid, this.child);
    this.child = undefined;
  }

  /** SIGSTOP: connections stay open but nothing is answered, as with a hung server. */
  pause(): void {
    if (this.child?.pid !== undefined) process.kill(this.child.pid, "SIGSTOP");
  }

  resume(): void {
    if (this.child?.pid !== undefined && isAlive(this.child.pid)) process.kill(this.child.pid, "SIGCONT");
  }
}
