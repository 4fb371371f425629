import { describe, expect, it } from "vitest";
import { compact, errorBody, formatDate, listBody, render, responseName } from "./envelope.ts";

describe("envelopes", () => {
  it("names responses after the command and leaves empty lists empty", () => {
    expect(responseName("listVirtualMachines")).toBe("listvirtualmachinesresponse");
    expect(listBody("zone", [], 0)).toEqual({});
    expect(listBody("zone", [{ id: "a" }], 3)).toEqual({ count: 3, zone: [{ id: "a" }] });
  });

  it("renders errors with the HTTP status equal to the errorcode", () => {
    const rendered = render("listzonesresponse", errorBody(431, "bad"), "json", 431);
    expect(rendered).toEqual({
      status: 431,
      contentType: "application/json; charset=UTF-8",
      body: '{"listzonesresponse":{"uuidList":[],"errorcode":431,"cserrorcode":9999,"errortext":"bad"}}',
    });
    expect(JSON.parse(render("x", errorBody(533, "full"), "json", 533).body).x.cserrorcode).toBe(4325);
  });

  it("renders XML with escaped values and repeated list elements", () => {
    const xml = render("listzonesresponse", { count: 2, zone: [{ name: "a<b" }, { name: "c" }] }, "xml").body;
    expect(xml).toContain(
      '<listzonesresponse cloud-stack-version="4.20.0"><count>2</count><zone><name>a&lt;b</name></zone><zone><name>c</name></zone></listzonesresponse>',
    );
  });

  it("prints dates as CloudStack does and drops absent fields", () => {
    expect(formatDate("2021-10-04T09:24:38Z")).toBe("2021-10-04T09:24:38+0000");
    expect(formatDate("garbage")).toBeUndefined();
    expect(compact({ a: 1, b: undefined, c: false })).toEqual({ a: 1, c: false });
  });
});
