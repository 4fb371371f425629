// Pure: the parameters of CloudStack's snapshot commands read into VolumeSnapshot and
// SnapshotPolicy fields, each with its limit and CloudStack's 431 text (SnapshotManagerImpl).
import { createHash } from "node:crypto";
import { SNAPSHOT_INTERVALS, type SnapshotInterval } from "../crds/index.ts";
import { ApiError, ERROR } from "./envelope.ts";

/** A snapshot's name is a DNS label: it is the object's name, and `name=` filters match it exactly. */
const SNAPSHOT_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** As the SnapshotPolicy CRD: maxSnapshots 1..100, a time zone of at most 64 characters. */
export const MAX_SNAPSHOTS = 100;
const MAX_TIMEZONE_LENGTH = 64;
const TIMEZONE_CHARACTERS = /^[A-Za-z0-9_+\-/]+$/;
const LABEL_VALUE_LENGTH = 63;

/** CloudStack's interval type, in any case (DateUtil.IntervalType.getIntervalType). */
export function intervalType(value: string): SnapshotInterval {
  const interval = SNAPSHOT_INTERVALS.find((i) => i === value.trim().toUpperCase());
  if (!interval)
    throw new ApiError(
      ERROR.PARAM,
      `Unsupported interval type ${value}: it is one of ${SNAPSHOT_INTERVALS.join(", ")}`,
    );
  return interval;
}

/** CloudStack's SnapshotPolicyResponse gives the interval as its ordinal (a short): HOURLY 0 ... MONTHLY 3. */
export const intervalOrdinal = (interval: SnapshotInterval): number => SNAPSHOT_INTERVALS.indexOf(interval);

/** An IANA time zone the schedule is read in; what Intl does not know is 431, never a silent GMT. */
export function timeZone(value: string): string {
  const zone = value.trim();
  const refuse = (why: string) =>
    new ApiError(ERROR.PARAM, `Invalid parameter timezone value=${value.slice(0, 80)}: ${why}`);
  if (zone.length === 0 || zone.length > MAX_TIMEZONE_LENGTH || !TIMEZONE_CHARACTERS.test(zone))
    throw refuse(
      `a time zone is an IANA name of at most ${MAX_TIMEZONE_LENGTH} characters, e.g. Europe/Berlin`,
    );
  try {
    new Intl.DateTimeFormat("en", { timeZone: zone });
  } catch {
    throw refuse("it is not a known time zone (IANA names such as UTC or Europe/Berlin)");
  }
  return zone;
}

/** maxsnaps: how many of a policy's snapshots are kept. */
export function maxSnapshots(value: number, interval: SnapshotInterval): number {
  if (value <= 0) throw new ApiError(ERROR.PARAM, "maxSnaps should be greater than 0");
  if (value > MAX_SNAPSHOTS)
    throw new ApiError(
      ERROR.PARAM,
      `maxSnaps exceeds limit: ${MAX_SNAPSHOTS} for interval type: ${interval}`,
    );
  return value;
}

/** A snapshot name given by the client, lower-cased as other Stratus object names. */
export function snapshotName(value: string): string {
  const name = value.toLowerCase();
  if (!SNAPSHOT_NAME.test(name))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter name value=${value.slice(0, 80)}: a snapshot name has 1 to 63 lower-case letters, digits and hyphens`,
    );
  return name;
}

/** CloudStack names a snapshot after its volume and the time (<volume>_<yyyyMMddHHmmss>); as a DNS label. */
export function generatedSnapshotName(volume: string, now: Date): string {
  const time = now.toISOString().replace(/\D/g, "").slice(0, 14);
  return `${volume.slice(0, LABEL_VALUE_LENGTH - time.length - 1).replace(/[-.]+$/, "")}-${time}`;
}

/**
 * CloudStack keeps one policy per volume and interval (createSnapshotPolicy again updates it), so
 * the name is `<volume>-<interval>`; it is also a label value on the snapshots, so at most 63
 * characters: a long volume name is cut and a hash of it keeps names apart.
 */
export function policyName(volume: string, interval: SnapshotInterval): string {
  const name = `${volume}-${interval.toLowerCase()}`;
  if (name.length <= LABEL_VALUE_LENGTH) return name;
  const hash = createHash("sha256").update(volume).digest("hex").slice(0, 8);
  const room = LABEL_VALUE_LENGTH - interval.length - hash.length - 2;
  return `${volume.slice(0, room).replace(/[-.]+$/, "")}-${hash}-${interval.toLowerCase()}`;
}

/** The `snapshottype` filter of listSnapshots: MANUAL, RECURRING (any policy's) or an interval. */
export function snapshotTypeFilter(
  value: string | undefined,
): "MANUAL" | "RECURRING" | SnapshotInterval | undefined {
  if (value === undefined || value === "") return undefined;
  const type = value.toUpperCase();
  if (type === "MANUAL" || type === "RECURRING") return type;
  const interval = SNAPSHOT_INTERVALS.find((i) => i === type);
  if (!interval)
    throw new ApiError(
      ERROR.PARAM,
      `Unsupported snapshot type ${value}: it is MANUAL, RECURRING or one of ${SNAPSHOT_INTERVALS.join(", ")}`,
    );
  return interval;
}
