// SSH key pairs through the CloudStack API, as a real process driven by the real Python `cs` client:
// register/create/list/delete key pairs, key pairs applied with kubectl, deploy with keypair and
// userdata (GET and POST), resetSSHKeyForVirtualMachine, and bad input, each with CloudStack's error
// code and nothing left over (the cloud: guest-login-cloud.ts).
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { Resources, type SSHKeyPair, type VirtualMachine } from "../../crds/index.ts";
import { parseSshPublicKey, sshFingerprint } from "../../crds/ssh-public-key.ts";
import { hasCs } from "./cloudstack-accounts.ts";
import {
  ECDSA_KEY,
  type Json,
  LAPTOP_FINGERPRINT,
  LAPTOP_KEY,
  useGuestLoginCloud,
} from "./guest-login-cloud.ts";
import { kubectl, sharedControlPlane, waitFor } from "./support.ts";

const runFile = promisify(execFile);

describe.skipIf(!hasCs)("SSH key pairs over the CloudStack API (needs python3-cs)", () => {
  const { cloud, cs, refused, deployArgs, vmNamed, secretNamed } = useGuestLoginCloud("kp");

  it("registers, creates, lists and deletes key pairs; another account's answer as unknown", async () => {
    const { client, alice, bob, workDir } = cloud;
    const registered = await cs(alice, "registerSSHKeyPair", { name: "laptop", publickey: LAPTOP_KEY });
    expect(registered.json).toEqual({
      keypair: {
        id: expect.any(String),
        name: "laptop",
        fingerprint: LAPTOP_FINGERPRINT,
        account: alice.namespace,
        domain: "ROOT",
      },
    });
    // A CloudStack name that is no object name (capitals, a space) is kept as given.
    expect(
      (await cs(alice, "registerSSHKeyPair", { name: "Work Key", publickey: ECDSA_KEY }, true)).json,
    ).toMatchObject({
      keypair: { name: "Work Key", fingerprint: "7b:d8:a6:eb:16:2a:ea:f4:85:20:47:fb:72:25:f9:e9" },
    });

    const created = (await cs(alice, "createSSHKeyPair", { name: "generated" })).json.keypair as Json;
    expect(created).toMatchObject({
      name: "generated",
      privatekey: expect.stringMatching(/^-----BEGIN RSA PRIVATE KEY-----/),
    });
    // The private key answered is the one whose public half was kept: ssh-keygen derives it.
    await writeFile(join(workDir, "generated"), created.privatekey as string, { mode: 0o600 });
    const derived = (await runFile("/usr/bin/ssh-keygen", ["-y", "-f", join(workDir, "generated")])).stdout;
    const derivedKey = parseSshPublicKey(derived);
    expect("error" in derivedKey ? derivedKey.error : sshFingerprint(derivedKey)).toBe(created.fingerprint);
    // ... and nothing keeps the private key: not the object, not the list.
    const stored = await client.get<SSHKeyPair>(Resources.sshKeyPairs, "generated", alice.namespace);
    expect(JSON.stringify(stored)).not.toContain("PRIVATE KEY");

    const listed = (await cs(alice, "listSSHKeyPairs")).json;
    expect(listed.count).toBe(3);
    expect(JSON.stringify(listed)).not.toContain("privatekey");
    expect((await cs(alice, "listSSHKeyPairs", { name: "Work Key" })).json).toMatchObject({
      count: 1,
      sshkeypair: [{ name: "Work Key" }],
    });
    expect((await cs(alice, "listSSHKeyPairs", { name: "work key" })).json).toEqual({});
    expect(
      (await cs(alice, "listSSHKeyPairs", { fingerprint: created.fingerprint as string })).json,
    ).toMatchObject({ count: 1, sshkeypair: [{ name: "generated" }] });
    expect((await cs(alice, "listSSHKeyPairs", { keyword: "LAP" })).json).toMatchObject({
      count: 1,
      sshkeypair: [{ name: "laptop" }],
    });
    const paged = (await cs(alice, "listSSHKeyPairs", { page: "2", pagesize: "1" })).json;
    expect(paged.count).toBe(3);
    expect(paged.sshkeypair).toHaveLength(1);
    // The API component writes every key pair's fingerprint into its status (kubectl shows it).
    await waitFor("the fingerprint in the key pair's status", async () => {
      const pair = await client.get<SSHKeyPair>(Resources.sshKeyPairs, "laptop", alice.namespace);
      return pair.status?.fingerprint === LAPTOP_FINGERPRINT;
    });

    // Bob sees none of them, and deleting one by name answers as for a name that does not exist.
    expect((await cs(bob, "listSSHKeyPairs", { listall: "true" })).json).toEqual({});
    expect(await refused(bob, "deleteSSHKeyPair", { name: "laptop" })).toMatchObject({
      errorcode: 431,
      errortext: `A key pair with name 'laptop' does not exist for account ${bob.namespace} in specified domain id`,
    });
    expect(await client.get(Resources.sshKeyPairs, "laptop", alice.namespace)).toBeDefined();

    expect((await cs(alice, "deleteSSHKeyPair", { name: "Work Key" })).json).toEqual({ success: true });
    expect((await cs(alice, "listSSHKeyPairs")).json.count).toBe(2);
    expect(await refused(alice, "deleteSSHKeyPair", { name: "Work Key" })).toMatchObject({
      errorcode: 431,
    });
  });

  it("fingerprints key pairs applied with kubectl, says why a key is not one, and lists them", async () => {
    const { client, bob } = cloud;
    const { kubeconfigPath } = await sharedControlPlane();
    for (const example of ["examples/ssh-key-pair.yaml", "examples/user-data.yaml"])
      expect(
        await kubectl(kubeconfigPath, ["apply", "--server-side", "-n", bob.namespace, "-f", example]),
      ).toMatchObject({ code: 0, stderr: "" });
    const wrongType = LAPTOP_KEY.replace("ssh-ed25519", "ssh-rsa");
    await client.create(Resources.sshKeyPairs, {
      metadata: { name: "wrong-type", namespace: bob.namespace },
      spec: { publicKey: wrongType },
    });
    const statusOf = (name: string) =>
      client.get<SSHKeyPair>(Resources.sshKeyPairs, name, bob.namespace).then((p) => p.status);
    await waitFor("the example's fingerprint", async () => (await statusOf("laptop"))?.fingerprint);
    expect(await statusOf("laptop")).toMatchObject({
      fingerprint: LAPTOP_FINGERPRINT,
      conditions: [{ type: "Valid", status: "True" }],
    });
    await waitFor("the wrong key's condition", async () => (await statusOf("wrong-type"))?.conditions);
    expect(await statusOf("wrong-type")).toMatchObject({
      conditions: [{ type: "Valid", status: "False", reason: "InvalidPublicKey" }],
    });
    expect((await statusOf("wrong-type"))?.fingerprint).toBeUndefined();
    // The schema itself refuses what is not one OpenSSH key line.
    const garbage = await client
      .create(Resources.sshKeyPairs, {
        metadata: { name: "garbage", namespace: bob.namespace },
        spec: { publicKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
      })
      .then(
        () => 201,
        (error: { status?: number }) => error.status,
      );
    expect(garbage).toBe(422);
    await waitFor("bob's key pairs listed", async () => (await cs(bob, "listSSHKeyPairs")).json.count === 2);
    expect((await cs(bob, "listSSHKeyPairs", { name: "laptop" })).json).toMatchObject({
      sshkeypair: [{ name: "laptop", fingerprint: LAPTOP_FINGERPRINT, account: bob.namespace }],
    });
    expect((await cs(bob, "listUserData", { name: "web-server" })).json).toMatchObject({
      userdata: [{ name: "web-server", params: "role" }],
    });
    for (const name of ["laptop", "wrong-type"])
      await client.delete(Resources.sshKeyPairs, name, bob.namespace);
    await client.delete(Resources.userData, "web-server", bob.namespace);
  });

  it("refuses malformed keys and taken names, leaving nothing behind", async () => {
    const { client, alice, bob } = cloud;
    const before = (await client.list(Resources.sshKeyPairs, { namespace: alice.namespace })).items.length;
    for (const publickey of [
      "ssh-rsa not-base64!",
      LAPTOP_KEY.replace("ssh-ed25519", "ssh-rsa"),
      "-----BEGIN OPENSSH PRIVATE KEY-----",
      `ssh-ed25519 ${"A".repeat(9000)}`,
    ])
      expect(await refused(alice, "registerSSHKeyPair", { name: "bad", publickey }, true)).toMatchObject({
        errorcode: 431,
        errortext: expect.stringMatching(/^Public key is invalid: /),
      });
    expect(
      await refused(alice, "registerSSHKeyPair", { name: "laptop", publickey: ECDSA_KEY }),
    ).toMatchObject({
      errorcode: 431,
      errortext: "A key pair with name 'laptop' already exists.",
    });
    expect(await refused(alice, "registerSSHKeyPair", { name: "copy", publickey: LAPTOP_KEY })).toMatchObject(
      {
        errorcode: 431,
        errortext: expect.stringMatching(/same public key already exists/),
      },
    );
    expect(await refused(alice, "createSSHKeyPair", { name: "laptop" })).toMatchObject({ errorcode: 431 });
    expect(
      await refused(alice, "registerSSHKeyPair", {
        name: "for-bob",
        publickey: ECDSA_KEY,
        account: bob.namespace,
      }),
    ).toMatchObject({ errorcode: 431, errortext: expect.stringMatching(/caller's own account/) });
    expect((await client.list(Resources.sshKeyPairs, { namespace: alice.namespace })).items).toHaveLength(
      before,
    );
  });

  it("deploys with a key pair and user data sent by POST, and resets the key of a stopped VM", async () => {
    const { client, alice, bob, zone: ZONE, suffix } = cloud;
    const userData = Buffer.from(`#cloud-config\n${"# padding\n".repeat(600)}`).toString("base64");
    expect(userData.length).toBeGreaterThan(4096);
    const deployed = await cs(
      alice,
      "deployVirtualMachine",
      { ...deployArgs("with-key"), keypair: "laptop", userdata: userData },
      true,
    );
    expect(deployed.json).toMatchObject({
      virtualmachine: { name: "with-key", state: "Stopped", keypairs: "laptop", passwordenabled: false },
    });
    expect(deployed.json.virtualmachine).not.toHaveProperty("password");
    const vm = await vmNamed(alice, "with-key");
    expect(vm?.spec).toMatchObject({ keyPairs: ["laptop"], userDataSecret: "with-key-userdata" });
    expect((await secretNamed(alice, "with-key-userdata"))?.data?.userdata).toBe(userData);

    const id = (deployed.json.virtualmachine as Json).id as string;
    const reset = await cs(alice, "resetSSHKeyForVirtualMachine", { id, keypairs: "generated,laptop" });
    expect(reset.json).toMatchObject({ virtualmachine: { id, keypairs: "generated,laptop" } });
    expect((await vmNamed(alice, "with-key"))?.spec).toMatchObject({ keyPairs: ["generated", "laptop"] });
    expect(await refused(alice, "resetSSHKeyForVirtualMachine", { id, keypair: "nope" })).toMatchObject({
      errorcode: 431,
      errortext: "A key pair with name 'nope' was not found.",
    });
    // Bob's own key pair of the same name is not Alice's: her VM cannot name it, his id is unknown to her.
    await cs(bob, "registerSSHKeyPair", { name: "bobs", publickey: ECDSA_KEY });
    expect(await refused(alice, "resetSSHKeyForVirtualMachine", { id, keypair: "bobs" })).toMatchObject({
      errorcode: 431,
      errortext: "A key pair with name 'bobs' was not found.",
    });
    expect(await refused(bob, "resetSSHKeyForVirtualMachine", { id, keypair: "bobs" })).toMatchObject({
      errorcode: 431,
    });
    expect((await vmNamed(alice, "with-key"))?.spec).toMatchObject({ keyPairs: ["generated", "laptop"] });

    // A VM that is not stopped keeps its keys, as CloudStack requires (no host runs this one: Pending).
    const pending = await client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name: "pending", namespace: alice.namespace },
      spec: {
        zone: ZONE,
        serviceOffering: `kp-small-${suffix}`,
        template: `kp-plain-${suffix}`,
        runStrategy: "Always",
        nics: [{ name: "eth0", network: "net" }],
      },
    });
    await waitFor(
      "the API component to see the pending VM",
      async () => (await cs(alice, "listVirtualMachines", { name: "pending" })).json.count === 1,
    );
    expect(
      await refused(alice, "resetSSHKeyForVirtualMachine", {
        id: pending.metadata.uid as string,
        keypair: "laptop",
      }),
    ).toMatchObject({ errorcode: 431, errortext: "Vm pending should be stopped to do SSH Key reset" });
    expect((await vmNamed(alice, "pending"))?.spec).not.toHaveProperty("keyPairs");
  });

  it("refuses unknown or foreign key pairs and oversized user data on deploy, leaving nothing behind", async () => {
    const { alice } = cloud;
    const cases: [string, Record<string, string>, boolean, RegExp][] = [
      ["unknown key pair", { keypair: "nope" }, false, /^A key pair with name 'nope' was not found\.$/],
      [
        "another account's key pair",
        { keypairs: "laptop,bobs" },
        false,
        /^A key pair with name 'bobs' was not found\.$/,
      ],
      [
        "user data over 4 KiB by GET",
        { userdata: "A".repeat(4100) },
        false,
        /too long for an http GET request/,
      ],
      [
        "user data over 32 KiB by POST",
        { userdata: Buffer.alloc(32 * 1024 + 1).toString("base64") },
        true,
        /at most 32 KiB decoded/,
      ],
      ["user data that is not base64", { userdata: "not base64!" }, true, /must be base64/],
    ];
    for (const [what, extra, post, text] of cases) {
      const answer = await refused(
        alice,
        "deployVirtualMachine",
        { ...deployArgs("refused"), ...extra },
        post,
      );
      expect({ what, code: answer.errorcode }).toEqual({ what, code: 431 });
      expect(answer.errortext).toMatch(text);
      expect(await vmNamed(alice, "refused")).toBeUndefined();
      expect(await secretNamed(alice, "refused-userdata")).toBeUndefined();
    }
  });
});
