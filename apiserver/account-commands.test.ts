import { describe, expect, it } from "vitest";
import type { AsyncJob } from "../crds/index.ts";
import type { KubeObject } from "../runtime/client.ts";
import { ACCOUNT_COMMANDS } from "./account-commands.ts";
import type { CloudStackApi } from "./api.ts";

/** deleteAccount's job as the job controller sees it, with the account namespaces its cache holds. */
function deleteAccountOutcome(namespaces: KubeObject[]) {
  const api = {
    accountNamespaces: {
      byIndex: (index: string, uid: string) =>
        index === "uid" ? namespaces.filter((n) => n.metadata.uid === uid) : [],
    },
  } as unknown as CloudStackApi;
  const job = {
    metadata: { name: "job-1", namespace: "root" },
    spec: { command: "deleteAccount", parameters: { "stratus.account": "uid-b" } },
  } as unknown as AsyncJob;
  return ACCOUNT_COMMANDS.deleteAccount?.outcome?.(job, api);
}

describe("deleteAccount's job", () => {
  it("succeeds once the account's namespace is gone", () => {
    expect(deleteAccountOutcome([])).toEqual({ result: { success: true } });
  });

  it("says what keeps the namespace while it stays, in the namespace controller's words", () => {
    const terminating = {
      metadata: { name: "team-b", uid: "uid-b" },
      status: {
        phase: "Terminating",
        conditions: [
          {
            type: "NamespaceDeletionDiscoveryFailure",
            status: "True",
            message: "Discovery failed for some groups: subresources.stratus.io/v1alpha1",
          },
          { type: "NamespaceContentRemaining", status: "False", message: "All content removed" },
        ],
      },
    } as KubeObject;
    expect(deleteAccountOutcome([terminating])).toEqual({
      waitingFor:
        "namespace team-b to be deleted: NamespaceDeletionDiscoveryFailure: Discovery failed for some groups: subresources.stratus.io/v1alpha1",
    });
    expect(deleteAccountOutcome([{ metadata: { name: "team-b", uid: "uid-b" } }])).toEqual({
      waitingFor: "namespace team-b to be deleted",
    });
  });
});
