// SSH key pairs, user data and passwords through the CloudStack API, as a real process driven by the
// real Python `cs` client: register/create/list/delete key pairs, deploy with keypair and userdata
// (GET and POST), resetSSHKeyForVirtualMachine, resetPasswordForVirtualMachine, and bad input, each
// with CloudStack's error code and nothing left over. Only the API component runs: VMs deployed with
// startvm=false are Stopped without a host, which is all these commands need.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SECRET, type Secret } from "../../apiserver/api.ts";
import { type AsyncJob, Resources, type SSHKeyPair, type VirtualMachine } from "../../crds/index.ts";
import { parseSshPublicKey, sshFingerprint } from "../../crds/ssh-public-key.ts";
import { KubeClient, type KubeObject, type ResourceType } from "../../runtime/client.ts";
import {
  type Account,
  bindCloudUserRole,
  catalogReaderRole,
  hasCs,
  makeAccount,
  cs as runCs,
} from "./cloudstack-accounts.ts";
import { type StratusProcess, startApiServer } from "./processes.ts";
import { kubectl, sharedControlPlane, useNamespace, waitFor } from "./support.ts";

const runFile = promisify(execFile);
const suffix = randomBytes(3).toString("hex");
const ZONE = `kp-zone-${suffix}`;
const LAPTOP_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDyhz9OuYAGFhduTmHItT2kO2LZjGhLOrQbS5F7reNT6 test@example";
const LAPTOP_FINGERPRINT = "3e:b1:cd:d2:44:b1:25:3f:37:a5:22:b4:14:d6:23:a5";
const ECDSA_KEY =
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHIva4UVBR7ieGuDsweOHGAaJgPnuFEnT7rAC4YV5tT1LzhKDZ80ci7BA48TjOiwcmfDKq9wPDr4tneJPRX1nGQ=";
const CRD: ResourceType = {
  group: "apiextensions.k8s.io",
  version: "v1",
  plural: "customresourcedefinitions",
  kind: "CustomResourceDefinition",
  namespaced: false,
};
/** The VM fields the guest-login branch adds to the kind; this test adds them if the CRD lacks them. */
const GUEST_LOGIN_FIELDS = {
  keyPairs: { type: "array", maxItems: 16, items: { type: "string", maxLength: 253 } },
  passwordSecret: { type: "string", maxLength: 253 },
};

type Json = Record<string, unknown>;
const uidOf = (object: unknown) => (object as KubeObject).metadata.uid as string;
type CrdObject = KubeObject & {
  spec: { versions: { schema: { openAPIV3Schema: { properties: { spec: { properties: Json } } } } }[] };
};

describe.skipIf(!hasCs)(
  "SSH key pairs, user data and passwords over the CloudStack API (needs python3-cs)",
  () => {
    let client: KubeClient;
    let endpoint: string;
    let api: StratusProcess;
    let alice: Account;
    let bob: Account;
    let workDir: string;
    const ids = { zone: "", offering: "", template: "", passwordTemplate: "" };
    let addedGuestLoginFields = false;

    /** `cs` as an account (POST with `post`): the JSON it printed, errors included. */
    const cs = (account: Account, command: string, args: Record<string, string> = {}, post = false) =>
      runCs(endpoint, account, command, args, { post });
    /** The error envelope of a refused command: its code and text. */
    const refused = async (
      account: Account,
      command: string,
      args: Record<string, string>,
      post = false,
    ): Promise<{ errorcode?: number; errortext?: string }> => {
      // cs exits 0 whatever the answer: the error envelope tells.
      const answer = await cs(account, command, args, post);
      return (answer.json[`${command.toLowerCase()}response`] ?? answer.json) as Json;
    };
    const deployArgs = (name: string, template = ids.template) => ({
      serviceofferingid: ids.offering,
      templateid: template,
      zoneid: ids.zone,
      name,
      startvm: "false",
    });
    const vmNamed = (account: Account, name: string) =>
      client.get<VirtualMachine>(Resources.virtualMachines, name, account.namespace).catch(() => undefined);
    const secretNamed = (account: Account, name: string) =>
      client.get<Secret>(SECRET, name, account.namespace).catch(() => undefined);

    beforeAll(async () => {
      const controlPlane = await sharedControlPlane();
      client = new KubeClient(controlPlane.kubeConfig);
      const keysNamespace = await useNamespace(controlPlane.kubeConfig, "keys");
      const catalogRole = await catalogReaderRole(client, `kp-catalog-${suffix}`);
      alice = await makeAccount(client, {
        keysNamespace,
        name: "kp-alice",
        suffix,
        clusterRoles: [catalogRole],
      });
      bob = await makeAccount(client, { keysNamespace, name: "kp-bob", suffix, clusterRoles: [catalogRole] });
      // The manifests' own tenant role, bound in each account, is what lets them manage key pairs.
      await bindCloudUserRole(client, suffix, [alice, bob]);

      addedGuestLoginFields = await ensureGuestLoginFields(client, alice.namespace);
      const zone = await client.create(Resources.zones, { metadata: { name: ZONE }, spec: {} });
      const offering = await client.create(Resources.serviceOfferings, {
        metadata: { name: `kp-small-${suffix}` },
        spec: { cpu: 1, memory: "128Mi" },
      });
      const source = { url: "http://127.0.0.1:9/never-downloaded.qcow2" };
      const template = await client.create(Resources.templates, {
        metadata: { name: `kp-plain-${suffix}` },
        spec: { source },
      });
      const passwordTemplate = await client.create(Resources.templates, {
        metadata: { name: `kp-password-${suffix}` },
        spec: { source, passwordEnabled: true },
      });
      Object.assign(ids, {
        zone: uidOf(zone),
        offering: uidOf(offering),
        template: uidOf(template),
        passwordTemplate: uidOf(passwordTemplate),
      });
      for (const account of [alice, bob])
        await client.create(Resources.networks, {
          metadata: { name: "net", namespace: account.namespace },
          spec: { zone: ZONE, cidr: "10.9.0.0/24" },
        });
      workDir = await mkdtemp(join(tmpdir(), "stratus-kp-"));
      const started = await startApiServer({
        kubeconfigPath: controlPlane.kubeconfigPath,
        client,
        identity: `kp-${suffix}-api`,
        keysNamespace,
      });
      api = started.process;
      endpoint = started.endpoint;
    });

    afterEach((context) => {
      if (context.task.result?.state === "fail")
        process.stderr.write(`--- api:\n${api?.logs().slice(-3000)}\n`);
    });

    afterAll(async () => {
      await api?.stop("SIGKILL");
      // No operator runs here to release the finalizers the admission policy adds: the test does.
      const release = async (type: ResourceType, object: KubeObject) => {
        const { name, namespace } = object.metadata;
        await client
          .mergePatch(type, name as string, namespace, { metadata: { finalizers: null } })
          .catch(() => undefined);
        await client.delete(type, name as string, namespace).catch(() => undefined);
      };
      for (const vm of (await client.list(Resources.virtualMachines, { namespace: alice.namespace })).items)
        await release(Resources.virtualMachines, vm);
      if (addedGuestLoginFields) await removeGuestLoginFields(client);
      for (const [type, name] of [
        [Resources.templates, `kp-plain-${suffix}`],
        [Resources.templates, `kp-password-${suffix}`],
        [Resources.serviceOfferings, `kp-small-${suffix}`],
        [Resources.zones, ZONE],
      ] as const)
        await release(type, { metadata: { name } });
      await client?.close();
      if (workDir) await rm(workDir, { recursive: true, force: true });
    });

    it("registers, creates, lists and deletes key pairs; another account's answer as unknown", async () => {
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
      await waitFor(
        "bob's key pairs listed",
        async () => (await cs(bob, "listSSHKeyPairs")).json.count === 2,
      );
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
      expect(
        await refused(alice, "registerSSHKeyPair", { name: "copy", publickey: LAPTOP_KEY }),
      ).toMatchObject({
        errorcode: 431,
        errortext: expect.stringMatching(/same public key already exists/),
      });
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

    it("gives a password-enabled template's VM a password once, and a new one on reset while stopped", async () => {
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
      expect(
        await refused(alice, "registerUserData", { name: "Boot Script", userdata: script }),
      ).toMatchObject({
        errorcode: 431,
        errortext: "A userdata with name Boot Script already exists for this account.",
      });
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
  },
);

/** Adds the guest-login VM fields to the installed CRD when it lacks them; whether it did. */
async function ensureGuestLoginFields(client: KubeClient, namespace: string): Promise<boolean> {
  const name = `${Resources.virtualMachines.plural}.${Resources.virtualMachines.group}`;
  const crd = await client.get<CrdObject>(CRD, name);
  const properties = crd.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};
  if ("keyPairs" in properties && "passwordSecret" in properties) return false;
  Object.assign(properties, GUEST_LOGIN_FIELDS);
  await client.replace(CRD, crd);
  // The API server serves a changed schema a moment later: a probe VM shows when fields are kept.
  await waitFor("the VirtualMachine kind to keep spec.keyPairs", async () => {
    const probe = await client.create<VirtualMachine>(Resources.virtualMachines, {
      apiVersion: "stratus.io/v1alpha1",
      kind: "VirtualMachine",
      metadata: { generateName: "probe-", namespace },
      spec: {
        zone: "probe",
        serviceOffering: "probe",
        template: "probe",
        runStrategy: "Halted",
        keyPairs: ["probe"],
      },
    } as VirtualMachine);
    const name = probe.metadata.name as string;
    await client.mergePatch(Resources.virtualMachines, name, namespace, { metadata: { finalizers: null } });
    await client.delete(Resources.virtualMachines, name, namespace);
    return "keyPairs" in probe.spec;
  });
  return true;
}

async function removeGuestLoginFields(client: KubeClient): Promise<void> {
  const name = `${Resources.virtualMachines.plural}.${Resources.virtualMachines.group}`;
  const crd = await client.get<CrdObject>(CRD, name);
  const properties = crd.spec.versions[0]?.schema.openAPIV3Schema.properties.spec.properties ?? {};
  for (const field of Object.keys(GUEST_LOGIN_FIELDS)) delete properties[field];
  await client.replace(CRD, crd);
}
