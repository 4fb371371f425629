// User data and passwords through the CloudStack API, driven by the real Python `cs` client: a
// password-enabled template's VMs get a password answered once (deploy, resetPasswordForVirtualMachine)
// and kept in a Secret only, and registered user data (registerUserData, listUserData,
// deleteUserData, userdataid on deploy and update), each refusal with CloudStack's error code and
// nothing left over (the cloud: guest-login-cloud.ts).
import { describe, expect, it } from "vitest";
import { type AsyncJob, Resources } from "../../crds/index.ts";
import { type Account, hasCs } from "./cloudstack-accounts.ts";
import { type Json, useGuestLoginCloud } from "./guest-login-cloud.ts";
import { waitFor } from "./support.ts";

describe.skipIf(!hasCs)("user data and passwords over the CloudStack API (needs python3-cs)", () => {
  const { cloud, cs, refused, deployArgs, vmNamed, secretNamed } = useGuestLoginCloud("ud");

  it("gives a password-enabled template's VM a password once, and a new one on reset while stopped", async () => {
    const { client, alice, bob, ids, api, suffix } = cloud;
    const deployed = await cs(
      alice,
      "deployVirtualMachine",
      deployArgs("with-password", ids.passwordTemplate),
      true,
    );
    const view = deployed.json.virtualmachine as Json;
    expect(view).toMatchObject({
      name: "with-password",
      passwordenabled: true,
      password: expect.any(String),
    });
    const first = view.password as string;
    expect(first).toHaveLength(16);
    const vm = await vmNamed(alice, "with-password");
    expect(vm?.spec).toMatchObject({ passwordSecret: "with-password-password" });
    const secret = await secretNamed(alice, "with-password-password");
    expect(Buffer.from(secret?.data?.password ?? "", "base64").toString()).toBe(first);
    expect(secret?.metadata.ownerReferences?.[0]).toMatchObject({
      kind: "VirtualMachine",
      uid: vm?.metadata.uid,
    });
    // Never in the VM, never in a later listing.
    expect(JSON.stringify(vm)).not.toContain(first);
    const listed = (await cs(alice, "listVirtualMachines", { id: view.id as string })).json;
    expect(JSON.stringify(listed)).not.toContain(first);

    const reset = await cs(alice, "resetPasswordForVirtualMachine", { id: view.id as string });
    const second = (reset.json.virtualmachine as Json).password as string;
    expect(second).toHaveLength(16);
    expect(second).not.toBe(first);
    const rewritten = await secretNamed(alice, "with-password-password");
    expect(Buffer.from(rewritten?.data?.password ?? "", "base64").toString()).toBe(second);
    // The job keeps the answer for its account only; its parameters hold no password.
    const jobs = (await client.list<AsyncJob>(Resources.asyncJobs, { namespace: alice.namespace })).items;
    const resetJob = jobs.find((j) => j.spec.command === "resetPasswordForVirtualMachine");
    expect(JSON.stringify(resetJob?.spec)).not.toContain(second);

    // A password the user chooses is not recorded in the job's parameters either.
    const chosen = `Chosen-${suffix}`;
    const set = await cs(
      alice,
      "resetPasswordForVirtualMachine",
      { id: view.id as string, password: chosen },
      true,
    );
    expect((set.json.virtualmachine as Json).password).toBe(chosen);
    const all = (await client.list<AsyncJob>(Resources.asyncJobs, { namespace: alice.namespace })).items;
    expect(all.every((j) => !JSON.stringify(j.spec).includes(chosen))).toBe(true);

    // Nor does the API component ever log one.
    for (const password of [first, second, chosen]) expect(api.logs()).not.toContain(password);

    // Bob cannot reset it (unknown id); a template without passwords refuses.
    expect(await refused(bob, "resetPasswordForVirtualMachine", { id: view.id as string })).toMatchObject({
      errorcode: 431,
    });
    const plain = await cs(alice, "deployVirtualMachine", deployArgs("no-password"), true);
    const plainId = (plain.json.virtualmachine as Json).id as string;
    expect((plain.json.virtualmachine as Json).password).toBeUndefined();
    expect(await refused(alice, "resetPasswordForVirtualMachine", { id: plainId })).toMatchObject({
      errorcode: 431,
      errortext: "Fail to reset password for the virtual machine, the template is not password enabled",
    });
    expect(await secretNamed(alice, "no-password-password")).toBeUndefined();
  });

  it("registers user data, deploys and updates VMs with its id, and deletes it; another account's id is unknown", async () => {
    const { alice, bob } = cloud;
    const script = Buffer.from("#!/bin/sh\necho registered > /run/registered\n").toString("base64");
    const registered = await cs(
      alice,
      "registerUserData",
      { name: "Boot Script", userdata: script, params: "role,env" },
      true,
    );
    expect(registered.json).toEqual({
      userdata: {
        id: expect.any(String),
        name: "Boot Script",
        account: alice.namespace,
        domain: "ROOT",
        userdata: script,
        params: "role,env",
      },
    });
    const id = (registered.json.userdata as Json).id as string;
    expect(await refused(alice, "registerUserData", { name: "Boot Script", userdata: script })).toMatchObject(
      {
        errorcode: 431,
        errortext: "A userdata with name Boot Script already exists for this account.",
      },
    );
    expect(
      await refused(alice, "registerUserData", { name: "big", userdata: "A".repeat(4100) }),
    ).toMatchObject({
      errorcode: 431,
      errortext: expect.stringMatching(/too long for an http GET request/),
    });
    expect((await cs(alice, "listUserData", { name: "Boot Script" })).json).toMatchObject({
      count: 1,
      userdata: [{ id, name: "Boot Script" }],
    });
    expect((await cs(alice, "listUserData")).json.count).toBe(1);
    expect((await cs(bob, "listUserData", { listall: "true" })).json).toEqual({});

    const deployed = await cs(
      alice,
      "deployVirtualMachine",
      { ...deployArgs("from-registered"), userdataid: id },
      true,
    );
    expect(deployed.json).toMatchObject({
      virtualmachine: { name: "from-registered", state: "Stopped" },
    });
    expect((await vmNamed(alice, "from-registered"))?.spec.userDataSecret).toBe("from-registered-userdata");
    expect((await secretNamed(alice, "from-registered-userdata"))?.data?.userdata).toBe(script);

    // Both at once, another account's id, and template variables are refused; nothing is made.
    const other = Buffer.from("#cloud-config\n").toString("base64");
    const refusals: [Account, Record<string, string>, RegExp][] = [
      [alice, { userdataid: id, userdata: other }, /either userdata or userdataid/],
      [bob, { userdataid: id }, /^Invalid parameter userdataid value=/],
      [alice, { userdataid: id, "userdatadetails[0].role": "web" }, /userdatadetails is not supported/],
    ];
    for (const [account, extra, text] of refusals) {
      const answer = await refused(
        account,
        "deployVirtualMachine",
        { ...deployArgs("refused-ud"), ...extra },
        true,
      );
      expect(answer.errorcode).toBe(431);
      expect(answer.errortext).toMatch(text);
      expect(await vmNamed(account, "refused-ud")).toBeUndefined();
    }

    // updateVirtualMachine takes a registered id too; the VM keeps its copy once the original is gone.
    const second = Buffer.from("#!/bin/sh\necho second\n").toString("base64");
    const secondId = (
      (await cs(alice, "registerUserData", { name: "second", userdata: second })).json.userdata as Json
    ).id as string;
    const vmId = (deployed.json.virtualmachine as Json).id as string;
    expect(
      (await cs(alice, "updateVirtualMachine", { id: vmId, userdataid: secondId }, true)).json,
    ).toMatchObject({
      virtualmachine: { id: vmId },
    });
    expect((await secretNamed(alice, "from-registered-userdata"))?.data?.userdata).toBe(second);

    expect(await refused(bob, "deleteUserData", { id })).toMatchObject({ errorcode: 431 });
    expect((await cs(alice, "deleteUserData", { id })).json).toEqual({ success: true });
    expect(await refused(alice, "deleteUserData", { id })).toMatchObject({ errorcode: 431 });
    await waitFor(
      "the deleted user data to leave the list",
      async () => (await cs(alice, "listUserData", { name: "Boot Script" })).json.count === undefined,
    );
    expect((await secretNamed(alice, "from-registered-userdata"))?.data?.userdata).toBe(second);
  });
});
