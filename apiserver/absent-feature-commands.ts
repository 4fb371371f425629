// CloudStack commands for what Stratus does not have: projects. Their listings are empty, as
// clients expect.
import type { Command } from "./api.ts";
import { page } from "./listing.ts";

/** Things Stratus does not have (projects) list as empty, as clients expect. */
const emptyList = (itemKey: string): Command => ({ handler: async (call) => page(call, itemKey, []) });

export const ABSENT_FEATURE_COMMANDS: Record<string, Command> = {
  listProjects: emptyList("project"),
};
