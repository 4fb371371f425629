// The informer loses nothing: changes made while its API server is away are all delivered when it
// returns, a compacted history is recovered by a relist, and a silent watch is restarted.
// The informer talks to a second kube-apiserver (an HA replica) that the tests stop and freeze,
// while the changes go through the first.
import { CoreV1Api } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiServerReplica } from "../../devcluster/apiserver-replica.ts";
import type { LocalControlPlane } from "../../devcluster/controlplane.ts";
import { loadKubeConfig } from "../../devcluster/kubeconfig.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import { Informer } from "../../runtime/informer.ts";
import { sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const CONFIG_MAPS: ResourceType = {
  group: "",
  version: "v1",
  plural: "configmaps",
  kind: "ConfigMap",
  namespaced: true,
};
type ConfigMap = KubeObject & { data?: Record<string, string> };

describe("informer resilience", () => {
  let controlPlane: LocalControlPlane;
  let replica: ApiServerReplica;
  let core: CoreV1Api;
  let namespace: string;
  let client: KubeClient;
  let admin: KubeClient;

  beforeAll(async () => {
    controlPlane = await sharedControlPlane();
    core = controlPlane.kubeConfig.makeApiClient(CoreV1Api);
    namespace = await useNamespace(controlPlane.kubeConfig, "informer");
    replica = await controlPlane.startApiServerReplica();
    client = new KubeClient(loadKubeConfig(replica.kubeconfigPath));
    admin = new KubeClient(controlPlane.kubeConfig);
  });
  afterAll(async () => {
    await client?.close();
    await admin?.close();
    await replica?.stop();
  });

  /** What the API server holds now, by name: resourceVersion. */
  async function serverState(): Promise<Record<string, string>> {
    const list = await core.listNamespacedConfigMap({ namespace, labelSelector: "informer-test=true" });
    return Object.fromEntries(
      list.items.map((c) => [c.metadata?.name as string, c.metadata?.resourceVersion as string]),
    );
  }
  const cacheState = (informer: Informer<ConfigMap>) =>
    Object.fromEntries(
      informer.list().map((c) => [c.metadata.name as string, c.metadata.resourceVersion as string]),
    );

  function recordingInformer(options: ConstructorParameters<typeof Informer<ConfigMap>>[2] = {}) {
    const informer = new Informer<ConfigMap>(client, CONFIG_MAPS, {
      namespace,
      labelSelector: "informer-test=true",
      backoffMs: [100, 1000],
      ...options,
    });
    const seen = { added: new Set<string>(), updated: new Set<string>(), deleted: new Set<string>() };
    informer.addHandlers({
      onAdd: (c) => seen.added.add(c.metadata.name as string),
      onUpdate: (_, c) => seen.updated.add(c.metadata.name as string),
      onDelete: (c) => seen.deleted.add(c.metadata.name as string),
    });
    return { informer, seen };
  }

  // Changes go through the first API server, never the replica the informer watches.
  const create = (name: string, value = "1") =>
    core.createNamespacedConfigMap({
      namespace,
      body: { metadata: { name, labels: { "informer-test": "true" } }, data: { value } },
    });
  const change = (name: string, value: string) =>
    admin.mergePatch(CONFIG_MAPS, name, namespace, { data: { value } });
  const remove = (name: string) => core.deleteNamespacedConfigMap({ namespace, name });

  it("delivers every create, change and delete made while its API server was stopped", async () => {
    for (const name of ["a", "b", "c", "d", "e"]) await create(name);
    const { informer, seen } = recordingInformer();
    informer.start();
    try {
      await informer.waitForSync();
      expect(cacheState(informer)).toEqual(await serverState());

      await replica.stop();
      await create("f");
      await create("g");
      await change("a", "2");
      await change("b", "2");
      await remove("c");
      await remove("d");
      expect(informer.list()).toHaveLength(5); // it cannot know yet
      await replica.start();

      const expected = await serverState();
      await waitFor(
        "the cache to match the server",
        () => JSON.stringify(cacheState(informer)) === JSON.stringify(expected),
      );
      expect([...seen.added].sort()).toEqual(["a", "b", "c", "d", "e", "f", "g"]);
      expect([...seen.updated].sort()).toEqual(["a", "b"]);
      expect([...seen.deleted].sort()).toEqual(["c", "d"]);
      expect(informer.stats.errors).toBeGreaterThan(0);
      expect(informer.get(`${namespace}/a`)?.data?.value).toBe("2");
    } finally {
      await informer.stop();
    }
  });

  it("relists after etcd compacted the history it would resume from", async () => {
    const { informer, seen } = recordingInformer();
    informer.start();
    try {
      await informer.waitForSync();
      const listsBefore = informer.stats.lists;
      await replica.stop();
      for (let i = 0; i < 10; i++) await change("e", `v${i}`);
      await create("h");
      await remove("f");
      await compactEtcd(controlPlane.etcdEndpoint);
      await replica.start();

      const expected = await serverState();
      await waitFor(
        "the cache to match the server",
        () => JSON.stringify(cacheState(informer)) === JSON.stringify(expected),
      );
      expect(informer.stats.gone).toBeGreaterThan(0);
      expect(informer.stats.lists).toBeGreaterThan(listsBefore);
      expect(seen.added.has("h")).toBe(true);
      expect(seen.deleted.has("f")).toBe(true);
      expect(informer.get(`${namespace}/e`)?.data?.value).toBe("v9");
    } finally {
      await informer.stop();
    }
  });

  it("restarts a watch that went silent", async () => {
    const { informer, seen } = recordingInformer({ stallTimeoutMs: 1500 });
    informer.start();
    try {
      await informer.waitForSync();
      replica.pause();
      await waitFor("the watchdog to fire", () => informer.stats.stalls > 0, { timeoutMs: 20_000 });
      replica.resume();
      await create("after-stall");
      await waitFor("the new object to arrive", () => seen.added.has("after-stall"), { timeoutMs: 30_000 });
    } finally {
      replica.resume();
      await informer.stop();
    }
  });

  it("keeps indexes current and re-delivers every object on resync", async () => {
    const informer = new Informer<ConfigMap>(client, CONFIG_MAPS, {
      namespace,
      labelSelector: "informer-test=true",
      resyncPeriodMs: 300,
      indexers: { value: (c) => [c.data?.value ?? ""] },
    });
    const resynced = new Set<string>();
    informer.addHandlers({ onResync: (c) => resynced.add(c.metadata.name as string) });
    informer.start();
    try {
      await informer.waitForSync();
      const names = (value: string) =>
        informer
          .byIndex("value", value)
          .map((c) => c.metadata.name)
          .sort();
      expect(names("2")).toEqual(["a", "b"]);
      await change("b", "3");
      await waitFor("b to move in the index", () => names("3").includes("b"));
      expect(names("2")).toEqual(["a"]);
      await waitFor("a resync of every object", () => resynced.size === informer.list().length);
      expect(() => informer.byIndex("missing", "x")).toThrow('configmaps informer has no index "missing"');
    } finally {
      await informer.stop();
    }
  });

  it("hands out frozen objects, so the cache cannot be changed by accident", async () => {
    const { informer } = recordingInformer();
    informer.start();
    try {
      await informer.waitForSync();
      const cached = informer.get(`${namespace}/a`) as ConfigMap;
      expect(() => {
        (cached.data as Record<string, string>).value = "mutated";
      }).toThrow(TypeError);
      expect(informer.get(`${namespace}/a`)?.data?.value).toBe("2");
    } finally {
      await informer.stop();
    }
  });
});

/** Compacts etcd's history up to now, through its JSON gateway. */
async function compactEtcd(endpoint: string): Promise<void> {
  const status = (await (
    await fetch(`${endpoint}/v3/maintenance/status`, { method: "POST", body: "{}" })
  ).json()) as {
    header: { revision: string };
  };
  const response = await fetch(`${endpoint}/v3/kv/compaction`, {
    method: "POST",
    body: JSON.stringify({ revision: status.header.revision, physical: true }),
  });
  if (!response.ok) throw new Error(`etcd compaction failed: ${response.status} ${await response.text()}`);
}
