// Live migration in the libvirt binding: virDomainMigrate2 (the agent opens both daemons, as
// `virsh migrate` without --p2p and as CloudStack's KVM agent does), its progress
// (virDomainGetJobInfo) and cancellation (virDomainAbortJob), and the owner mark a domain that
// arrived is given (virDomainSetMetadata). A migration blocks its connection for as long as it
// runs, so it runs on a connection of its own; progress and abort use the agent's connection
// (libvirt answers job queries while a migration job holds the domain).
import koffi from "koffi";
import { freeDomain, LibvirtConnection, type Pointer } from "./connection.ts";

const lib = koffi.load("libvirt.so.0");
koffi.struct("virDomainJobInfo", {
  type: "int",
  timeElapsed: "unsigned long long",
  timeRemaining: "unsigned long long",
  dataTotal: "unsigned long long",
  dataProcessed: "unsigned long long",
  dataRemaining: "unsigned long long",
  memTotal: "unsigned long long",
  memProcessed: "unsigned long long",
  memRemaining: "unsigned long long",
  fileTotal: "unsigned long long",
  fileProcessed: "unsigned long long",
  fileRemaining: "unsigned long long",
});
const api = {
  migrate2: lib.func(
    "void *virDomainMigrate2(void *dom, void *dconn, const char *dxml, unsigned long flags, const char *dname, const char *uri, unsigned long bandwidth)",
  ),
  getJobInfo: lib.func("int virDomainGetJobInfo(void *dom, _Out_ virDomainJobInfo *info)"),
  abortJob: lib.func("int virDomainAbortJob(void *dom)"),
  getJobStats: lib.func(
    "int virDomainGetJobStats(void *dom, _Out_ int *type, _Out_ void **params, _Out_ int *nparams, unsigned int flags)",
  ),
  typedParamsFree: lib.func("void virTypedParamsFree(void *params, int nparams)"),
  setMetadata: lib.func(
    "int virDomainSetMetadata(void *dom, int type, const char *metadata, const char *key, const char *uri, unsigned int flags)",
  ),
};

// virDomainMigrateFlags: live, defined on the target, gone from the source, and UNSAFE because
// libvirt trusts only cluster file systems as shared storage (a sharedMountPoint pool is a plain
// directory to it; CloudStack migrates such pools the same way).
export const VIR_MIGRATE_LIVE = 1;
export const VIR_MIGRATE_PERSIST_DEST = 8;
export const VIR_MIGRATE_UNDEFINE_SOURCE = 16;
export const VIR_MIGRATE_UNSAFE = 512;
export const LIVE_MIGRATION_FLAGS =
  VIR_MIGRATE_LIVE | VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE | VIR_MIGRATE_UNSAFE;
/** The same move with the guest paused for the whole transfer (see migrateDomain's `live`). */
export const PAUSED_MIGRATION_FLAGS = LIVE_MIGRATION_FLAGS & ~VIR_MIGRATE_LIVE;
export const VIR_DOMAIN_XML_MIGRATABLE = 8;
const JOB_NONE = 0;
const JOB_STATS_COMPLETED = 1;
/** virTypedParameter: char field[80], int type, then an 8-byte value union. */
const TYPED_PARAMETER_BYTES = 96;
const TYPED_PARAM_ULLONG = 4;
const METADATA_ELEMENT = 2;
const AFFECT_LIVE_AND_CONFIG = 1 | 2;

export interface JobProgress {
  elapsedMs: number;
  totalBytes: number;
  processedBytes: number;
  remainingBytes: number;
}

/**
 * Migrates domain `name` from the daemon at `sourceUri` to the one at `destinationUri`, with the
 * definition `destinationXml` there; QEMU's stream goes to `migrateUri` (tcp://ADDRESS[:PORT]) when
 * given. Resolves once the guest runs on the target; throws libvirt's reason otherwise.
 */
export async function migrateDomain(options: {
  sourceUri: string;
  name: string;
  destinationUri: string;
  destinationXml: string;
  migrateUri?: string;
  bandwidthMiBps?: number;
  /** false: the guest is paused while its memory is copied, so no write it makes can be missed. */
  live: boolean;
}): Promise<Record<string, number>> {
  const source = await LibvirtConnection.open(options.sourceUri);
  let migrated: Pointer;
  let stats: Record<string, number> = {};
  try {
    const destination = await LibvirtConnection.open(options.destinationUri);
    try {
      await source.useDomain(options.name, async (dom) => {
        migrated = await source.callPointer(
          `live-migrate ${options.name} to ${options.destinationUri}`,
          api.migrate2,
          dom,
          destination.handle,
          options.destinationXml,
          options.live ? LIVE_MIGRATION_FLAGS : PAUSED_MIGRATION_FLAGS,
          null,
          options.migrateUri ?? null,
          options.bandwidthMiBps ?? 0,
        );
      });
      // The target keeps the finished job's statistics: how long the guest was paused at the switch.
      stats = await completedJobStats(destination, migrated).catch(() => ({}));
      freeDomain(migrated);
    } finally {
      await destination.close();
    }
  } finally {
    await source.close();
  }
  return stats;
}

/** The unsigned numbers of a domain's completed job (downtime, time_elapsed, memory_transferred, ...). */
async function completedJobStats(
  connection: LibvirtConnection,
  dom: Pointer,
): Promise<Record<string, number>> {
  const type = [0];
  const params: [Pointer] = [null];
  const count = [0];
  await connection.callInt(
    "completed job stats",
    api.getJobStats,
    dom,
    type,
    params,
    count,
    JOB_STATS_COMPLETED,
  );
  const n = Number(count[0]);
  if (!params[0] || n === 0) return {};
  try {
    const bytes = Buffer.from(
      koffi.decode(params[0], koffi.array("uint8", n * TYPED_PARAMETER_BYTES)) as number[],
    );
    const stats: Record<string, number> = {};
    for (let i = 0; i < n; i++) {
      const record = bytes.subarray(i * TYPED_PARAMETER_BYTES, (i + 1) * TYPED_PARAMETER_BYTES);
      if (record.readInt32LE(80) !== TYPED_PARAM_ULLONG) continue;
      const field = record.subarray(0, 80).toString("latin1").replace(/\0.*$/s, "");
      stats[field] = Number(record.readBigUInt64LE(88));
    }
    return stats;
  } finally {
    api.typedParamsFree(params[0], n);
  }
}

/** The domain's job (a migration) under way, or undefined when it runs none. */
export async function jobProgress(
  connection: LibvirtConnection,
  name: string,
): Promise<JobProgress | undefined> {
  return connection.useDomain(name, async (dom: Pointer) => {
    const info: Record<string, unknown> = {};
    await connection.callInt(`job info of ${name}`, api.getJobInfo, dom, info);
    if (Number(info.type) === JOB_NONE) return undefined;
    return {
      elapsedMs: Number(info.timeElapsed),
      totalBytes: Number(info.dataTotal),
      processedBytes: Number(info.dataProcessed),
      remainingBytes: Number(info.dataRemaining),
    };
  });
}

/** Cancels the domain's job: a migration stops and the guest goes on running where it was. */
export function abortJob(connection: LibvirtConnection, name: string): Promise<number> {
  return connection.useDomain(name, (dom) =>
    connection.callInt(`abort the job of ${name}`, api.abortJob, dom),
  );
}

/** Replaces the domain's metadata element of namespace `uri` (live and persistent). */
export function setMetadataElement(
  connection: LibvirtConnection,
  name: string,
  element: string,
  key: string,
  uri: string,
): Promise<number> {
  return connection.useDomain(name, (dom) =>
    connection.callInt(
      `metadata of ${name}`,
      api.setMetadata,
      dom,
      METADATA_ELEMENT,
      element,
      key,
      uri,
      AFFECT_LIVE_AND_CONFIG,
    ),
  );
}
