// A control plane of its own (the shared one must not be restarted under other tests): objects
// survive a restart of etcd and kube-apiserver on the same data directory, and stop() leaves no
// process, port or directory behind.
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { CoreV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { isAlive, LocalControlPlane } from "../../devcluster/controlplane.ts";
import { COMPONENTS } from "../../devcluster/controlplane-components.ts";

function portAcceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("a control plane's lifecycle", () => {
  let controlPlane: LocalControlPlane;

  beforeAll(async () => {
    controlPlane = await LocalControlPlane.start({ binaries: inject("binaries"), unsafeNoFsync: false });
  });
  afterAll(async () => {
    await controlPlane?.stop();
  });

  it("keeps every object across a restart of etcd and kube-apiserver", async () => {
    const core = () => controlPlane.kubeConfig.makeApiClient(CoreV1Api);
    await core().createNamespace({ body: { metadata: { name: "durable" } } });
    for (let i = 0; i < 20; i++) {
      await core().createNamespacedConfigMap({
        namespace: "durable",
        body: { metadata: { name: `cm-${i}` }, data: { i: String(i) } },
      });
    }
    const before = await core().listNamespacedConfigMap({ namespace: "durable" });

    const pids = COMPONENTS.map((c) => controlPlane.pid(c) as number);
    await controlPlane.stopComponents();
    expect(pids.filter(isAlive)).toEqual([]);
    expect(controlPlane.running()).toEqual([]);

    await controlPlane.startComponents();
    expect(controlPlane.running()).toEqual([...COMPONENTS]);
    const after = await core().listNamespacedConfigMap({ namespace: "durable" });
    const summary = (list: typeof before) =>
      list.items.map((c) => [c.metadata?.name, c.metadata?.uid, c.data?.i]).sort();
    expect(summary(after)).toEqual(summary(before));
    expect(after.items).toHaveLength(21); // 20 + kube-root-ca.crt
  });

  it("stops without leaving a process, a listening port or its directory", async () => {
    const pids = COMPONENTS.map((c) => controlPlane.pid(c) as number);
    const apiserverPort = Number(new URL(controlPlane.server).port);
    expect(await portAcceptsConnections(apiserverPort)).toBe(true);
    await controlPlane.stop();
    expect(pids.filter(isAlive)).toEqual([]);
    expect(await portAcceptsConnections(apiserverPort)).toBe(false);
    expect(existsSync(controlPlane.dir)).toBe(false);
  });
});
