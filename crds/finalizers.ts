// The finalizers every VM, Volume, VolumeSnapshot and file-backed Template carries from its first write, added by a
// MutatingAdmissionPolicy on CREATE: no controller spends a patch (and a round trip) adding them,
// and no object exists for a moment without the guard that keeps its disk or domain from leaking.
import { GROUP } from "./definition.ts";

/** A libvirt domain may exist for the VM: the agent of status.host (or compute, when unplaced) removes it. */
export const DOMAIN_FINALIZER = "stratus.io/domain";
/** A disk file may exist for the volume: the agent whose pool holds it (or storage, when none does) removes it. */
export const DISK_FINALIZER = "stratus.io/disk";
/** Deletion guard of a data volume: storage removes it once no VM attaches the volume. */
export const STORAGE_FINALIZER = "stratus.io/storage";
/** A snapshot's file may exist on secondary storage: the agent that took it removes the file, then this. */
export const SNAPSHOT_DATA_FINALIZER = "stratus.io/snapshot-data";
/** Deletion guard of a StoragePool: storage removes it once no volume's disk is in the pool. */
export const STORAGE_POOL_FINALIZER = "stratus.io/storage-pool";
/**
 * A template's image may be on secondary storage or in host caches: storage removes this once
 * nothing uses the template and each zone's copy is gone (hosts then drop their cached copies).
 */
export const TEMPLATE_IMAGES_FINALIZER = "stratus.io/template-images";

export const FINALIZER_POLICY_NAME = "stratus-finalizers";
export const ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1";

type Json = Record<string, unknown>;

/** The policy and its binding, as the API server takes them. */
export function renderFinalizerPolicy(): [Json, Json] {
  // Applied like a server-side apply: finalizers is a set, so this merges and adding twice is a no-op.
  const expression = [
    "Object{",
    "  metadata: Object.metadata{",
    "    finalizers: request.resource.resource == 'virtualmachines'",
    `      ? ['${DOMAIN_FINALIZER}']`,
    "      : request.resource.resource == 'volumesnapshots'",
    `      ? ['${SNAPSHOT_DATA_FINALIZER}']`,
    // Templates with copies (secondary storage, host caches); not images already on every host.
    "      : request.resource.resource == 'templates'",
    "      ? (has(object.spec.source.url) || has(object.spec.source.volume) || has(object.spec.source.snapshot) ||",
    "          (has(object.spec.source.directBoot) &&",
    "            !(object.spec.source.directBoot.kernel.startsWith('/') && object.spec.source.directBoot.initrd.startsWith('/')))",
    `        ? ['${TEMPLATE_IMAGES_FINALIZER}'] : [])`,
    "      : has(object.spec.type) && object.spec.type == 'ROOT'",
    `        ? ['${DISK_FINALIZER}']`,
    `        : ['${DISK_FINALIZER}', '${STORAGE_FINALIZER}']`,
    "  }",
    "}",
  ].join("\n");
  return admissionPolicy("Mutating", FINALIZER_POLICY_NAME, {
    operations: ["CREATE"],
    resources: ["virtualmachines", "volumes", "volumesnapshots", "templates"],
    spec: {
      reinvocationPolicy: "Never",
      mutations: [{ patchType: "ApplyConfiguration", applyConfiguration: { expression } }],
    },
  });
}

/** A Stratus admission policy on its own kinds and its binding, as the API server takes them. */
export function admissionPolicy(
  kind: "Mutating" | "Validating",
  name: string,
  policy: { operations: string[]; resources: string[]; spec: Json; binding?: Json },
): [Json, Json] {
  const labels = { "app.kubernetes.io/part-of": "stratus" };
  const resourceRules = [
    { apiGroups: [GROUP], apiVersions: ["*"], operations: policy.operations, resources: policy.resources },
  ];
  return [
    {
      apiVersion: ADMISSION_API_VERSION,
      kind: `${kind}AdmissionPolicy`,
      metadata: { name, labels },
      spec: { failurePolicy: "Fail", matchConstraints: { resourceRules }, ...policy.spec },
    },
    {
      apiVersion: ADMISSION_API_VERSION,
      kind: `${kind}AdmissionPolicyBinding`,
      metadata: { name, labels },
      spec: { policyName: name, ...policy.binding },
    },
  ];
}
