// Two operators (or API components, or host agents' fabric peers) at once fight over the same
// objects: a file that starts one must run alone, in the orchestration project. A file that
// starts one without being listed made CI flaky once (two fabric controllers, two lease
// namespaces: each marked the other's hosts NotReady).
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CLUSTER_WIDE_ACTORS, NAMESPACED_ACTOR, ORCHESTRATION } from "./orchestration-files.ts";

describe("the orchestration project", () => {
  it("lists every integration test file that starts something acting cluster-wide, and only existing files", async () => {
    const dir = join(import.meta.dirname, "integration");
    const files = (await readdir(dir)).filter((f) => f.endsWith(".test.ts"));
    const unlisted: string[] = [];
    for (const file of files) {
      const path = `test/integration/${file}`;
      const text = await readFile(join(dir, file), "utf8");
      if (CLUSTER_WIDE_ACTORS.test(text) && !text.includes(NAMESPACED_ACTOR) && !ORCHESTRATION.includes(path))
        unlisted.push(path);
    }
    expect(unlisted).toEqual([]);
    for (const path of ORCHESTRATION) expect(files).toContain(path.replace("test/integration/", ""));
  });
});
