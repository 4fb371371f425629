// Kubernetes resource quantities (512Mi, 20Gi, 1.5G, 100k) as exact byte counts, and back.
const BINARY: Record<string, bigint> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};
const DECIMAL: Record<string, bigint> = {
  "": 1n,
  k: 10n ** 3n,
  M: 10n ** 6n,
  G: 10n ** 9n,
  T: 10n ** 12n,
  P: 10n ** 15n,
  E: 10n ** 18n,
};

const QUANTITY = /^(\d+)(?:\.(\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;

/** Parses a quantity into whole units (bytes for memory and disks), rounding fractions up. */
export function parseQuantity(quantity: string): bigint {
  const match = QUANTITY.exec(quantity.trim());
  if (!match) throw new Error(`"${quantity}" is not a quantity such as 512Mi or 20Gi`);
  const [, whole = "0", fraction = "", suffix = ""] = match;
  const multiplier = BINARY[suffix] ?? (DECIMAL[suffix] as bigint);
  const scale = 10n ** BigInt(fraction.length);
  const scaled = (BigInt(whole) * scale + BigInt(fraction || "0")) * multiplier;
  return (scaled + scale - 1n) / scale;
}

/** Formats bytes with the largest binary suffix that keeps it whole: 17179869184 -> 16Gi. */
export function formatQuantity(bytes: bigint): string {
  for (const suffix of ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"]) {
    const unit = BINARY[suffix] as bigint;
    if (bytes !== 0n && bytes % unit === 0n) return `${bytes / unit}${suffix}`;
  }
  return bytes.toString();
}
