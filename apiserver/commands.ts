// The CloudStack commands Stratus serves (docs/LEGACY-API.md 4): the registry that merges every
// area's commands (each *-commands.ts file serves one area; a later area's command of the same name
// would win), and listApis's index of CloudStack's own API.
import { readFileSync } from "node:fs";
import { ABSENT_FEATURE_COMMANDS } from "./absent-feature-commands.ts";
import { ACCOUNT_COMMANDS } from "./account-commands.ts";
import { AFFINITY_COMMANDS } from "./affinity-commands.ts";
import type { Command } from "./api.ts";
import { CATALOG_COMMANDS } from "./catalog-commands.ts";
import type { Json } from "./envelope.ts";
import { GUEST_LOGIN_COMMANDS } from "./guest-login.ts";
import { HOST_COMMANDS } from "./host-commands.ts";
import { ISO_COMMANDS } from "./iso-commands.ts";
import { JOB_COMMANDS } from "./job-commands.ts";
import { KEY_PAIR_COMMANDS } from "./keypair-commands.ts";
import { page } from "./listing.ts";
import { LOAD_BALANCER_COMMANDS } from "./load-balancer-commands.ts";
import { NETWORK_COMMANDS } from "./network-commands.ts";
import { NETWORK_RULE_COMMANDS } from "./network-rule-commands.ts";
import { OFFERING_COMMANDS } from "./offering-commands.ts";
import { PUBLIC_ADDRESS_COMMANDS } from "./public-address-commands.ts";
import { RESOURCE_LIMIT_COMMANDS } from "./resource-limit-commands.ts";
import { SNAPSHOT_COMMANDS } from "./snapshot-commands.ts";
import { STORAGE_POOL_COMMANDS } from "./storage-commands.ts";
import { TAG_COMMANDS } from "./tag-commands.ts";
import { TEMPLATE_COMMANDS } from "./template-commands.ts";
import { USER_DATA_COMMANDS } from "./user-data-commands.ts";
import { VM_COMMANDS } from "./vm-commands.ts";
import { VM_MIGRATION_COMMANDS } from "./vm-migration-commands.ts";
import { VOLUME_COMMANDS } from "./volume-commands.ts";
import { VOLUME_MIGRATION_COMMANDS } from "./volume-migration-commands.ts";

/** listApis: CloudStack's index of the commands this registry serves. */
const API_INDEX_COMMANDS: Record<string, Command> = {
  listApis: {
    async handler(call) {
      const name = call.params.get("name");
      const apis = apiIndex().filter((api) => api.name in COMMANDS && (!name || api.name === name));
      return page(
        call,
        "api",
        apis.map((api) => api as unknown as Json),
      );
    },
  },
};

export const COMMANDS: Record<string, Command> = {
  ...API_INDEX_COMMANDS,
  ...CATALOG_COMMANDS,
  ...VM_COMMANDS,
  ...JOB_COMMANDS,
  ...VOLUME_COMMANDS,
  ...TAG_COMMANDS,
  ...ABSENT_FEATURE_COMMANDS,
  ...NETWORK_COMMANDS,
  ...PUBLIC_ADDRESS_COMMANDS,
  ...NETWORK_RULE_COMMANDS,
  ...LOAD_BALANCER_COMMANDS,
  ...AFFINITY_COMMANDS,
  ...OFFERING_COMMANDS,
  ...STORAGE_POOL_COMMANDS,
  ...SNAPSHOT_COMMANDS,
  ...HOST_COMMANDS,
  ...VOLUME_MIGRATION_COMMANDS,
  ...VM_MIGRATION_COMMANDS,
  ...TEMPLATE_COMMANDS,
  ...ISO_COMMANDS,
  ...KEY_PAIR_COMMANDS,
  ...GUEST_LOGIN_COMMANDS,
  ...USER_DATA_COMMANDS,
  ...ACCOUNT_COMMANDS,
  ...RESOURCE_LIMIT_COMMANDS,
};

interface ApiEntry {
  name: string;
  description: string;
  isasync: boolean;
  since: string;
  related: string;
  type: string;
  params: {
    name: string;
    description: string;
    type: string;
    length: number;
    required: boolean;
    related: string;
    since: string;
  }[];
  response: never[];
}

let index: ApiEntry[] | undefined;

/** listApis entries from CloudStack's own API index (async flag, parameters, required ones). */
export function apiIndex(): ApiEntry[] {
  index ??= readFileSync(new URL("./api-index.tsv", import.meta.url), "utf8")
    .split("\n")
    .filter((line) => line && !line.startsWith("#"))
    .map((line) => {
      const [name = "", isasync, , required = "", all = ""] = line.split("\t");
      const requiredSet = new Set(required.split(",").filter(Boolean));
      return {
        name,
        description: `CloudStack ${name}, served by Stratus`,
        isasync: isasync === "true",
        since: "4.0.0",
        related: "",
        type: "",
        params: all
          .split(",")
          .filter(Boolean)
          .map((param) => ({
            name: param,
            description: param,
            type: "string",
            length: 255,
            required: requiredSet.has(param),
            related: "",
            since: "4.0.0",
          })),
        response: [],
      };
    });
  return index;
}
