// Pure: CloudStack's response envelopes (docs/LEGACY-API.md section 2): `<command>response`, lists
// with the total count (or `{}` when empty), success objects, async submissions, and errors whose
// HTTP status is their errorcode; JSON, or XML for `response=xml`.
import { escapeXml } from "../host-agent/xml.ts";

/** ApiErrorCode values clients see. */
export const ERROR = {
  UNAUTHORIZED: 401,
  METHOD_NOT_ALLOWED: 405,
  API_LIMIT_EXCEEDED: 429,
  MALFORMED_PARAMETER: 430,
  PARAM: 431,
  UNSUPPORTED_ACTION: 432,
  INTERNAL: 530,
  ACCOUNT: 531,
  INSUFFICIENT_CAPACITY: 533,
  RESOURCE_UNAVAILABLE: 534,
  RESOURCE_ALLOCATION: 535,
  RESOURCE_IN_USE: 536,
} as const;

/** CSExceptionErrorCode: ServerApiException's 9999 unless the failure names its own. */
const CS_ERROR_CODES: Partial<Record<number, number>> = {
  429: 4545, // RequestLimitException
  531: 4365,
  533: 4325,
  534: 4380,
  535: 4370, // ResourceAllocationException
  536: 4250,
};

/** A failure the client is told about, with CloudStack's code and text. */
export class ApiError extends Error {
  override name = "ApiError";
  readonly code: number;
  constructor(code: number, text: string) {
    super(text);
    this.code = code;
  }
}

/** The one domain, ROOT: Stratus has no domains. */
export const ROOT_DOMAIN_ID = "0f1e2d3c-4b5a-4968-8776-655443322110";

export const UNAUTHORIZED_TEXT = "unable to verify user credentials and/or request signature";

/** The text Terraform matches to treat a missing object as gone (docs/LEGACY-API.md 2.4). */
export function entityNotFound(parameter: string, value: string): ApiError {
  return new ApiError(
    ERROR.PARAM,
    `Invalid parameter ${parameter} value=${value} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`,
  );
}

export function responseName(command: string): string {
  return `${command.toLowerCase()}response`;
}

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json | undefined };

/** A list answer: the total count and this page's items, or `{}` when nothing matched. */
export function listBody(itemKey: string, items: readonly Json[], total: number): Json {
  return items.length === 0 ? {} : { count: total, [itemKey]: [...items] };
}

export function errorBody(code: number, text: string): Json {
  return { uuidList: [], errorcode: code, cserrorcode: CS_ERROR_CODES[code] ?? 9999, errortext: text };
}

/** Dates as CloudStack prints them: 2021-10-04T09:24:38+0000. */
export function formatDate(value: string | Date | undefined): string | undefined {
  if (value === undefined) return undefined;
  const date = typeof value === "string" ? new Date(value) : value;
  if (Number.isNaN(date.getTime())) return undefined;
  return `${date.toISOString().slice(0, 19)}+0000`;
}

/** Drops undefined fields (Gson omits nulls; clients test for a key's presence). */
export function compact<T extends Record<string, unknown>>(
  object: T,
): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as never;
}

export interface Rendered {
  status: number;
  contentType: string;
  body: string;
  /** Set-Cookie values (login and logout). */
  cookies?: string[];
}

/** The whole response: `{<name>: body}` as JSON, or the same tree as XML. */
export function render(name: string, body: Json, format: "json" | "xml", status = 200): Rendered {
  if (format === "json")
    return {
      status,
      contentType: "application/json; charset=UTF-8",
      body: JSON.stringify({ [name]: body }),
    };
  return {
    status,
    contentType: "text/xml; charset=UTF-8",
    body: `<?xml version="1.0" encoding="UTF-8"?>${xmlElement(name, body, ' cloud-stack-version="4.20.0"')}`,
  };
}

function xmlElement(name: string, value: Json | undefined, attributes = ""): string {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.map((item) => xmlElement(name, item)).join("");
  if (typeof value === "object")
    return `<${name}${attributes}>${Object.entries(value)
      .map(([key, child]) => xmlElement(key, child))
      .join("")}</${name}>`;
  return `<${name}${attributes}>${escapeXml(String(value))}</${name}>`;
}
