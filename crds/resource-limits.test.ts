import { describe, expect, it } from "vitest";
import { ApiError } from "../runtime/client.ts";
import {
  computeLimitsOf,
  isQuotaRefusal,
  maxOf,
  quotaValueOf,
  RESOURCE_TYPES,
  resourceTypeOf,
  storageLimitOf,
} from "./resource-limits.ts";

describe("resource limits", () => {
  it("knows CloudStack's twelve resource types by number and by name", () => {
    expect(RESOURCE_TYPES.map((t) => t.type)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(resourceTypeOf("0")?.name).toBe("user_vm");
    expect(resourceTypeOf("memory")?.type).toBe(9);
    expect(resourceTypeOf("12")).toBeUndefined();
    // Each type is either kept in the quota or refused with a reason, never accepted and ignored.
    for (const type of RESOURCE_TYPES)
      expect(Boolean(type.quotaKey) !== Boolean(type.unlimitable)).toBe(true);
  });

  it("keeps memory in MiB as CloudStack counts it, and reads -1 for no limit", () => {
    const memory = resourceTypeOf("9");
    const vms = resourceTypeOf("0");
    if (!memory || !vms) throw new Error("types missing");
    expect(quotaValueOf(memory, 2048)).toBe("2048Mi");
    expect(maxOf(memory, { "stratus.io/memory": "2Gi" })).toBe(2048);
    expect(quotaValueOf(vms, 10)).toBe("10");
    expect(maxOf(vms, { "count/virtualmachines.stratus.io": "10" })).toBe(10);
    expect(maxOf(vms, {})).toBe(-1);
    expect(computeLimitsOf({ "stratus.io/cpu": "4", "stratus.io/memory": "1Gi" })).toEqual({
      cpu: 4,
      memoryBytes: 2n ** 30n,
    });
    expect(computeLimitsOf(undefined)).toEqual({});
  });

  it("keeps primary storage in GiB as CloudStack counts it", () => {
    const storage = resourceTypeOf("primary_storage");
    if (!storage) throw new Error("type missing");
    expect(storage.type).toBe(10);
    expect(quotaValueOf(storage, 20)).toBe("20Gi");
    expect(maxOf(storage, { "stratus.io/primary-storage": "20Gi" })).toBe(20);
    expect(storageLimitOf({ "stratus.io/primary-storage": "20Gi" })).toBe(20n * 2n ** 30n);
    expect(storageLimitOf({ "stratus.io/cpu": "4" })).toBeUndefined();
  });

  it("tells kube-apiserver's quota refusal from other refusals", () => {
    const quota = new ApiError(
      403,
      'volumes.stratus.io "x" is forbidden: exceeded quota: stratus-resource-limits',
      undefined,
    );
    expect(isQuotaRefusal(quota)).toBe(true);
    expect(isQuotaRefusal(new ApiError(403, "cannot create", undefined))).toBe(false);
  });
});
