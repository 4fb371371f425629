import { describe, expect, it } from "vitest";
import { staleCacheFiles } from "./image-cache.ts";

const LIVE = "5e1f0000-0000-4000-8000-000000000001";
const GONE = "6f000000-0000-4000-8000-000000000002";

describe("staleCacheFiles", () => {
  const files = [
    `${LIVE}.qcow2`,
    `${LIVE}.kernel`,
    `${LIVE}.qcow2.partial-1a2b3c4d`,
    `${GONE}.qcow2`,
    `${GONE}.initrd`,
    "notes.txt",
    "golden.qcow2",
  ];

  it("removes the files of templates that are gone, and nothing that is not a template's", () => {
    expect(staleCacheFiles(files, new Set([LIVE]), false)).toEqual([`${GONE}.qcow2`, `${GONE}.initrd`]);
  });

  it("at start-up also removes unfinished downloads (nothing downloads yet)", () => {
    expect(staleCacheFiles(files, new Set([LIVE, GONE]), true)).toEqual([`${LIVE}.qcow2.partial-1a2b3c4d`]);
  });
});
