import { describe, expect, it } from "vitest";
import type { Network, VirtualMachine } from "../crds/index.ts";
import { type GuestDataSource, guestDriveContent } from "./guest-data.ts";
import { HostProblem, Waiting } from "./problem.ts";

const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA a@host";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB b@host";

const vm = (spec: Partial<VirtualMachine["spec"]>): VirtualMachine =>
  ({
    metadata: { name: "web-1", namespace: "team-a", uid: "0b8e5c3e-2f6d-4c1a-9a55-6d1f3e2b7c90" },
    spec: { zone: "z1", serviceOffering: "small", template: "debian", ...spec },
  }) as VirtualMachine;

const network = { metadata: { name: "net", namespace: "team-a" }, spec: { cidr: "10.1.2.0/24" } } as Network;
const plan = { nics: [{ mac: "52:54:00:0b:8e:5c", ip: "10.1.2.42", network }] };

/** A source in memory: the Secrets' values and the key pairs that exist (state, not calls). */
function source(pairs: Record<string, string>, secrets: { userData?: string; password?: string } = {}) {
  const reads: string[] = [];
  const found: GuestDataSource = {
    secrets: async (machine) => {
      reads.push(machine.metadata.name as string);
      return secrets;
    },
    publicKey: async (_namespace, name) => pairs[name],
  };
  return { found, reads };
}

describe("what a guest is told", () => {
  it("joins spec.sshKeys and the key pairs' keys, decodes user data and password, and gives the NIC its address", async () => {
    const { found } = source(
      { laptop: KEY_B },
      {
        userData: Buffer.from("#cloud-config\n").toString("base64"),
        password: Buffer.from("pw").toString("base64"),
      },
    );
    const content = await guestDriveContent(
      vm({ sshKeys: [KEY_A, KEY_B], keyPairs: ["laptop"], userDataSecret: "s", passwordSecret: "p" }),
      plan,
      "z1",
      found,
    );
    expect(content.publicKeys).toEqual([KEY_A, KEY_B]);
    expect(content.userData?.toString()).toBe("#cloud-config\n");
    expect(content.password).toBe("pw");
    expect(content.nics).toEqual([
      {
        mac: "52:54:00:0b:8e:5c",
        ipv4: { address: "10.1.2.42", prefixLength: 24, gateway: "10.1.2.1" },
        dns: ["10.1.2.1"],
      },
    ]);
  });

  it("reads no Secret for a VM that names none", async () => {
    const { found, reads } = source({});
    const content = await guestDriveContent(vm({ sshKeys: [KEY_A] }), plan, "z1", found);
    expect(reads).toEqual([]);
    expect(content.userData).toBeUndefined();
  });

  it("waits, naming it, for a key pair that does not exist", async () => {
    const { found } = source({ laptop: KEY_B });
    const missing = guestDriveContent(vm({ keyPairs: ["laptop", "gone"] }), plan, "z1", found);
    await expect(missing).rejects.toBeInstanceOf(Waiting);
    await expect(missing).rejects.toMatchObject({
      reason: "KeyPairNotFound",
      message: /"gone" does not exist/,
    });
  });

  it("says so when the agent has no way to read user data", async () => {
    await expect(
      guestDriveContent(vm({ userDataSecret: "s" }), plan, "z1", undefined),
    ).rejects.toBeInstanceOf(HostProblem);
  });
});
