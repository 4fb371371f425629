// Pure: CloudStack request parameters as the Java server reads them (docs/LEGACY-API.md 1.1): query
// and form merged with the first value winning, names case-insensitive, `name[i].field` maps,
// comma-separated lists, Boolean.valueOf booleans, and UUID parameters.
import { ApiError, ERROR, entityNotFound } from "./envelope.ts";

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const MAP_KEY = /^([^[\].]+)\[(\d+)\]\.(.+)$/;

/** More parameters than any command takes (createTags with 200 tags is 400): a cheap refusal. */
export const MAX_PARAMETERS = 512;
/** Longer than any parameter name, map keys (`details[0].cpuNumber`) included. */
export const MAX_NAME_LENGTH = 200;

/** A Kubernetes object name of one label: what CloudStack names become. */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export class RequestParams {
  /** Names as sent (the signature covers them so), first value of each. */
  readonly raw: Readonly<Record<string, string>>;
  private readonly byLowerName: ReadonlyMap<string, string>;
  /** Lower-cased names sent in the query string (the first source): CloudStack limits some there. */
  private readonly inQueryString: ReadonlySet<string>;
  readonly command: string;

  /**
   * Refuses (430) more than MAX_PARAMETERS parameters, a name longer than MAX_NAME_LENGTH, and
   * two parameters that collide: the same name but for case (the server reads names
   * case-insensitively, so which one it used and which one was signed could differ) or the same
   * name with two values. The same pair twice (query and form, as old CloudMonkey sent) is one.
   */
  constructor(sources: readonly URLSearchParams[]) {
    const raw: Record<string, string> = Object.create(null);
    const lower = new Map<string, string>();
    const firstName = new Map<string, string>();
    const inQueryString = new Set<string>();
    let count = 0;
    for (const [sourceIndex, source] of sources.entries()) {
      for (const [name, value] of source) {
        if (++count > MAX_PARAMETERS)
          throw new ApiError(
            ERROR.MALFORMED_PARAMETER,
            `A request takes at most ${MAX_PARAMETERS} parameters`,
          );
        if (name.length > MAX_NAME_LENGTH)
          throw new ApiError(
            ERROR.MALFORMED_PARAMETER,
            `A parameter name is at most ${MAX_NAME_LENGTH} characters: ${name.slice(0, 40)}...`,
          );
        const folded = name.toLowerCase();
        const seen = firstName.get(folded);
        if (seen === undefined) {
          firstName.set(folded, name);
          if (sourceIndex === 0) inQueryString.add(folded);
          lower.set(folded, value);
          raw[name] = value;
        } else if (seen !== name || lower.get(folded) !== value)
          throw new ApiError(
            ERROR.MALFORMED_PARAMETER,
            `Parameter ${name} is sent more than once (also as ${seen}) with different names or values; send it once`,
          );
      }
    }
    this.raw = raw;
    this.byLowerName = lower;
    this.inQueryString = inQueryString;
    this.command = lower.get("command") ?? "";
  }

  get(name: string): string | undefined {
    return this.byLowerName.get(name.toLowerCase());
  }

  /** Whether the parameter came in the query string (an HTTP GET) rather than a POST body. */
  sentInQuery(name: string): boolean {
    return this.inQueryString.has(name.toLowerCase());
  }

  /** A required parameter, or CloudStack's 431 naming it. */
  required(name: string): string {
    const value = this.get(name);
    if (value === undefined || value === "")
      throw new ApiError(
        ERROR.PARAM,
        `Unable to execute API command ${this.command.toLowerCase()} due to missing parameter ${name}`,
      );
    return value;
  }

  /** Boolean.valueOf: "true" in any case is true, anything else false. */
  flag(name: string, fallback = false): boolean {
    const value = this.get(name);
    return value === undefined ? fallback : value.toLowerCase() === "true";
  }

  integer(name: string): number | undefined {
    const value = this.get(name);
    if (value === undefined || value === "") return undefined;
    if (!/^-?\d+$/.test(value))
      throw new ApiError(
        ERROR.PARAM,
        `Unable to execute API command ${this.command.toLowerCase()} due to invalid value ${value} for parameter ${name}`,
      );
    return Number(value);
  }

  list(name: string): string[] {
    return (this.get(name) ?? "")
      .split(",")
      .map((v) => v.trim())
      .filter(Boolean);
  }

  /** A UUID parameter: a value that is not a UUID counts as absent, as in CloudStack. */
  uuid(name: string): string | undefined {
    const value = this.get(name);
    return value && UUID.test(value) ? value.toLowerCase() : undefined;
  }

  /** A required UUID parameter, or 431. */
  requiredUuid(name: string): string {
    const value = this.required(name);
    if (!UUID.test(value)) throw entityNotFound(name, value);
    return value.toLowerCase();
  }

  /** `name[i].field=value` entries, in index order; a malformed key is 430. */
  map(name: string): Record<string, string>[] {
    const entries = new Map<number, Record<string, string>>();
    for (const [key, value] of Object.entries(this.raw)) {
      if (!key.toLowerCase().startsWith(`${name.toLowerCase()}[`)) continue;
      const match = MAP_KEY.exec(key);
      if (!match)
        throw new ApiError(
          ERROR.MALFORMED_PARAMETER,
          `Unable to decode parameter ${key}; the format is ${name}[0].field=value`,
        );
      const index = Number(match[2]);
      const entry = entries.get(index) ?? {};
      entry[match[3] as string] = value;
      entries.set(index, entry);
    }
    return [...entries.entries()].sort(([a], [b]) => a - b).map(([, entry]) => entry);
  }
}
