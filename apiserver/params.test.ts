import { describe, expect, it } from "vitest";
import { ApiError } from "./envelope.ts";
import { RequestParams } from "./params.ts";

const params = (query: string, form = "") =>
  new RequestParams([new URLSearchParams(query), new URLSearchParams(form)]);

describe("RequestParams", () => {
  it("merges query and form, first value winning, names case-insensitive", () => {
    const p = params("command=listZones&zoneId=a&zoneid=b", "zoneid=c&name=web");
    expect(p.command).toBe("listZones");
    expect(p.get("ZONEID")).toBe("a");
    expect(p.get("name")).toBe("web");
    expect(p.raw).toEqual({ command: "listZones", zoneId: "a", zoneid: "b", name: "web" });
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
