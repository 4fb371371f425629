import { describe, expect, it } from "vitest";
import { ApiError } from "./envelope.ts";
import { RequestParams } from "./params.ts";

const params = (query: string, form = "") =>
  new RequestParams([new URLSearchParams(query), new URLSearchParams(form)]);

describe("RequestParams", () => {
  it("merges query and form, names case-insensitive, the same pair twice counting once", () => {
    const p = params("command=listZones&zoneId=a", "zoneId=a&name=web");
    expect(p.command).toBe("listZones");
    expect(p.get("ZONEID")).toBe("a");
    expect(p.get("name")).toBe("web");
    expect(p.raw).toEqual({ command: "listZones", zoneId: "a", name: "web" });
  });

  it("tells a parameter sent in the query string (GET) from one sent in the body (POST)", () => {
    const p = params("command=deployVirtualMachine&userData=abc", "name=web");
    expect(p.sentInQuery("userdata")).toBe(true);
    expect(p.sentInQuery("name")).toBe(false);
    expect(p.sentInQuery("absent")).toBe(false);
  });

  it("refuses parameters that collide, too many and too long names (430)", () => {
    const refused = (query: string, form = "") => {
      try {
        params(query, form);
      } catch (error) {
        return error instanceof ApiError ? error.code : "not an ApiError";
      }
      return "accepted";
    };
    // Which of two spellings the server reads and which one the signature covers must not differ.
    expect(refused("signatureVersion=3&signatureversion=1")).toBe(430);
    expect(refused("expires=a", "Expires=a")).toBe(430);
    expect(refused("name=web", "name=other")).toBe(430);
    expect(refused("name=web&name=other")).toBe(430);
    expect(refused("a%62c=1&abc=2")).toBe(430); // the same name once decoded
    expect(refused("K=1&\u212a=1")).toBe(430); // the Kelvin sign lower-cases to k
    expect(refused(Array.from({ length: 513 }, (_, i) => `p${i}=1`).join("&"))).toBe(430);
    expect(refused(Array.from({ length: 512 }, (_, i) => `p${i}=1`).join("&"))).toBe("accepted");
    expect(refused(`${"n".repeat(201)}=1`)).toBe(430);
    expect(refused(`${"n".repeat(200)}=1`)).toBe("accepted");
    expect(Object.entries(params("__proto__=x").raw)).toEqual([["__proto__", "x"]]);
  });

  it("reads booleans, lists, integers and UUIDs as CloudStack does", () => {
    const p = params(
      "startvm=False&listall=TRUE&ids=a,%20b,,c&page=2&id=NOT-A-UUID&vm=7C9E6679-7425-40DE-944B-E07FC1F90AE7",
    );
    expect(p.flag("startvm", true)).toBe(false);
    expect(p.flag("listall")).toBe(true);
    expect(p.flag("missing", true)).toBe(true);
    expect(p.list("ids")).toEqual(["a", "b", "c"]);
    expect(p.integer("page")).toBe(2);
    expect(p.uuid("id")).toBeUndefined(); // not a UUID: absent
    expect(p.uuid("vm")).toBe("7c9e6679-7425-40de-944b-e07fc1f90ae7");
  });

  it("says which parameter is missing or malformed, with CloudStack's codes", () => {
    const p = params("command=deployVirtualMachine&pagesize=ten&id=zzz");
    expect(() => p.required("zoneid")).toThrow(
      new ApiError(431, "Unable to execute API command deployvirtualmachine due to missing parameter zoneid"),
    );
    expect(() => p.integer("pagesize")).toThrow(/invalid value ten for parameter pagesize/);
    expect(() => p.requiredUuid("id")).toThrow(
      /^Invalid parameter id value=zzz due to incorrect long value format/,
    );
  });

  it("reads map parameters in index order and refuses malformed keys with 430", () => {
    const p = params("tags[1].key=b&tags[1].value=2&tags[0].key=a&tags[0].value=1");
    expect(p.map("tags")).toEqual([
      { key: "a", value: "1" },
      { key: "b", value: "2" },
    ]);
    expect(() => params("tags[x].key=a").map("tags")).toThrow(expect.objectContaining({ code: 430 }));
  });
});
