// The one writer of SSHKeyPair status: the API component computes each key pair's fingerprint (and
// whether its key decodes), for the pairs it registers and for those applied with kubectl alike.
import type { Logger } from "pino";
import { Resources, type SSHKeyPair } from "../crds/index.ts";
import { parseSshPublicKey, sshFingerprint } from "../crds/ssh-public-key.ts";
import { ownConditions } from "../runtime/conditions.ts";
import { Controller } from "../runtime/controller.ts";
import type { RuntimeMetrics } from "../runtime/metrics.ts";
import { applyStatus } from "../runtime/objects.ts";
import type { CloudStackApi } from "./api.ts";

/** Pure: the status a key pair should show. */
export function keyPairStatus(pair: SSHKeyPair, now: Date = new Date()): Record<string, unknown> {
  const key = parseSshPublicKey(pair.spec.publicKey);
  const valid =
    "error" in key
      ? ({ type: "Valid", status: "False", reason: "InvalidPublicKey", message: key.error } as const)
      : ({ type: "Valid", status: "True", reason: "PublicKeyParsed", message: `a ${key.type} key` } as const);
  return {
    observedGeneration: pair.metadata.generation,
    ...("error" in key ? {} : { fingerprint: sshFingerprint(key) }),
    conditions: ownConditions(pair.status?.conditions, pair.metadata.generation, [valid], now),
  };
}

export function keyPairStatusController(
  api: CloudStackApi,
  logger: Logger,
  metrics: RuntimeMetrics,
): Controller {
  return new Controller({
    name: "ssh-key-pairs",
    logger,
    metrics,
    async reconcile(key) {
      const pair = api.sshKeyPairs.get(key);
      if (!pair) return undefined;
      await applyStatus(api.client, Resources.sshKeyPairs, pair, keyPairStatus(pair), "stratus-apiserver");
      return undefined;
    },
  }).watch(api.sshKeyPairs);
}
