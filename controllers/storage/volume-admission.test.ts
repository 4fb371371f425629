import { describe, expect, it } from "vitest";
import type { Volume } from "../../crds/index.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { type AdmissionInput, decideAdmissions } from "./volume-admission.ts";

const GiB = 2n ** 30n;

function volume(name: string, size: string, created: string, status: Volume["status"] = {}): Volume {
  return {
    apiVersion: "stratus.io/v1alpha1",
    kind: "Volume",
    metadata: { name, namespace: "acct", uid: `uid-${name}`, creationTimestamp: created },
    spec: { zone: "z1", type: "DATADISK", size },
    status,
  };
}

const decide = (volumes: Volume[], limitBytes: bigint | undefined, recent = new Map<string, bigint>()) =>
  decideAdmissions({
    account: "acct",
    volumes,
    limitBytes,
    requested: (v) => parseQuantity(v.spec.size as string),
    recent,
  } satisfies AdmissionInput).map((a) => ({
    name: a.volume.metadata.name,
    bytes: a.admittedBytes,
    status: a.condition.status,
    reason: a.condition.reason,
  }));

describe("decideAdmissions", () => {
  it("writes nothing for an account without a limit, but grants what a lifted limit held", () => {
    const held = volume("b", "100Gi", "t2", {
      conditions: [
        {
          type: "Admitted",
          status: "False",
          reason: "ResourceLimitExceeded",
          message: "m",
          lastTransitionTime: "2026-12-01T00:00:00Z",
        },
      ],
    });
    expect(decide([volume("a", "100Gi", "t1"), held], undefined)).toEqual([
      { name: "b", bytes: 100n * GiB, status: "True", reason: "Admitted" },
    ]);
  });

  it("grants the oldest volumes first while they fit, and says why the others wait", () => {
    const volumes = [volume("c", "1Gi", "t3"), volume("a", "2Gi", "t1"), volume("b", "2Gi", "t2")];
    expect(decide(volumes, 3n * GiB)).toEqual([
      { name: "a", bytes: 2n * GiB, status: "True", reason: "Admitted" },
      { name: "b", bytes: undefined, status: "False", reason: "ResourceLimitExceeded" },
      { name: "c", bytes: GiB, status: "True", reason: "Admitted" },
    ]);
    const [, refused] = decideAdmissions({
      account: "acct",
      volumes,
      limitBytes: 3n * GiB,
      requested: (v) => parseQuantity(v.spec.size as string),
      recent: new Map(),
    });
    expect(refused?.condition.message).toBe(
      "Maximum number of resources of type 'primary_storage' for account acct has been exceeded: 2 GiB of 3 GiB in use, volume b needs 2 GiB more (updateResourceLimit resourcetype=10 raises it, or delete volumes).",
    );
  });

  it("counts grants its cache does not show yet, so none is given twice", () => {
    const volumes = [volume("a", "2Gi", "t1"), volume("b", "2Gi", "t2")];
    // "a" was granted a moment ago; the cache still shows it without a grant.
    expect(decide(volumes, 3n * GiB, new Map([["uid-a", 2n * GiB]]))).toEqual([
      { name: "a", bytes: 2n * GiB, status: "True", reason: "Admitted" },
      { name: "b", bytes: undefined, status: "False", reason: "ResourceLimitExceeded" },
    ]);
  });

  it("never takes room back: existing disks and grants stay when the limit falls; growth needs room", () => {
    const volumes = [
      volume("old", "5Gi", "t1", { capacity: "5Gi" }),
      volume("grown", "4Gi", "t2", { admittedSize: "1Gi", capacity: "1Gi" }),
    ];
    expect(decide(volumes, 2n * GiB)).toEqual([
      { name: "old", bytes: 5n * GiB, status: "True", reason: "Admitted" },
      { name: "grown", bytes: GiB, status: "False", reason: "ResourceLimitExceeded" },
    ]);
    expect(decide(volumes, 9n * GiB)[1]).toEqual({
      name: "grown",
      bytes: 4n * GiB,
      status: "True",
      reason: "Admitted",
    });
  });

  it("gives a volume being deleted no new room, and counts what it holds until it is gone", () => {
    const going = {
      ...volume("going", "2Gi", "t1"),
      metadata: { ...volume("going", "2Gi", "t1").metadata, deletionTimestamp: "t9" },
    };
    const held = volume("held", "2Gi", "t2", { admittedSize: "2Gi" });
    expect(decide([going, held, volume("new", "1Gi", "t3")], 3n * GiB)).toEqual([
      { name: "held", bytes: 2n * GiB, status: "True", reason: "Admitted" },
      { name: "new", bytes: GiB, status: "True", reason: "Admitted" },
    ]);
  });
});
