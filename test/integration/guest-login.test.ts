// A guest people can log into, on real QEMU with a real cloud-init: a VM from the Debian cloud
// image (test/images/build-cloud-image.sh), applied with kubectl with an SSH key and user data in a
// Secret, boots from its config drive; from the host, `ssh` with the matching private key reaches it
// over the guest network, its hostname is the VM's name, the file its user data wrote is there and
// the default user's password is the one in the VM's password Secret.
// The same through the CloudStack API with the real `cs` client: a key pair from createSSHKeyPair,
// user data on deployVirtualMachine, and resetPasswordForVirtualMachine on the stopped VM, whose new
// password is the guest's after the start.
// Without the config drive, cloud-init has no key to install and the login fails.
// Needs root and the libvirt/QEMU Debian packages, mmdebstrap and extlinux (.ci/run installs them).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SECRET } from "../../apiserver/api.ts";
import { Resources, type VirtualMachine } from "../../crds/index.ts";
import { buildCloudImage } from "../../devcluster/guest-images.ts";
import { canRunQemu, ensureLibvirtDaemons } from "../../devcluster/libvirt.ts";
import { readConfigDrive } from "../../host-agent/config-drive.ts";
import { configDrivePath } from "../../host-agent/guest-data.ts";
import type { KubeClient, KubeObject } from "../../runtime/client.ts";
import {
  bindCloudUserRole,
  catalogReaderRole,
  hasCs,
  makeAccount,
  cs as runCs,
} from "./cloudstack-accounts.ts";
import type { ApiServerProcess, StratusProcess } from "./processes.ts";
import {
  guestCatalog,
  printAgentLogOnFailure,
  startGuestControlPlane,
  startQemuHostAgent,
  stopGuestCloud,
  virsh,
} from "./qemu-agent.ts";
import { kubectl, run as runCommand, waitFor, waitUntilGone } from "./support.ts";

const run = promisify(execFile);
const canBuildImage = ["mmdebstrap", "extlinux", "ssh", "ssh-keygen", "xorriso"].every((tool) =>
  ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].some((dir) => existsSync(join(dir, tool))),
);

describe.skipIf(!canRunQemu() || !canBuildImage)(
  "logging into a real cloud-init guest (needs root, libvirt/QEMU, mmdebstrap, extlinux)",
  () => {
    const suffix = randomBytes(3).toString("hex");
    const host = `login-${suffix}`;
    const vmName = `login-${suffix}`;
    const subnet = `10.${100 + Math.floor(Math.random() * 100)}.${Math.floor(Math.random() * 250)}`;
    const address = `${subnet}.42`;
    const workDir = `/var/lib/stratus/login-${suffix}`;
    const marker = `written-by-user-data-${suffix}`;
    const password = `pw-${randomBytes(6).toString("hex")}`;
    let client: KubeClient;
    let namespace: string;
    let kubeconfigPath: string;
    let agent: StratusProcess;
    let operator: StratusProcess;
    let api: ApiServerProcess;

    /** ssh into the guest at `at` with the private key in `key` (the kubectl test's by default). */
    const sshAs = (key: string, at: string, command: string) =>
      runCommand("ssh", [
        "-i",
        key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
        `debian@${at}`,
        command,
      ]);
    const ssh = (command: string) => sshAs(join(workDir, "key"), address, command);
    /** Whether the default user's password is `expected` (checked against /etc/shadow's hash). */
    const passwordIs = async (shell: (command: string) => ReturnType<typeof ssh>, expected: string) =>
      (
        await shell(
          `sudo python3 -W ignore -c 'import crypt, spwd; h = spwd.getspnam("debian").sp_pwdp; print(crypt.crypt("${expected}", h) == h)'`,
        )
      ).stdout.trim() === "True";

    beforeAll(async () => {
      await ensureLibvirtDaemons();
      await mkdir(workDir, { recursive: true, mode: 0o755 });
      // QEMU (libvirt-qemu) reads the template where it is: a copy beside the pool, not root's cache.
      const image = join(workDir, "debian-cloud.qcow2");
      await copyFile(await buildCloudImage(), image);
      await run("ssh-keygen", [
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        `login-${suffix}`,
        "-f",
        join(workDir, "key"),
      ]);

      // cloud-init and systemd want more than the tiny guest's 128 MiB.
      ({ kubeconfigPath, client, namespace } = await guestCatalog({
        prefix: "login",
        suffix,
        zone: "login",
        memory: "1Gi",
        template: { source: { hostPath: image }, format: "qcow2" },
        network: { name: "login-net", cidr: `${subnet}.0/24` },
      }));
      ({ operator, api } = await startGuestControlPlane({
        kubeconfigPath,
        client,
        namespace,
        workDir,
        name: `login-${suffix}`,
      }));
      agent = await startQemuHostAgent({
        kubeconfigPath,
        host,
        zone: "login",
        leaseNamespace: namespace,
        workDir,
        // Under this machine's nested KVM, boot loaders' real-mode code (extlinux, GRUB) stops on
        // KVM's "emulation failure"; software emulation boots them.
        args: ["--shutdown-grace=10", "--accelerator=tcg"],
      });
    }, 900_000);

    printAgentLogOnFailure(() => agent);

    afterAll(async () => {
      await client?.delete(Resources.virtualMachines, vmName, namespace).catch(() => undefined);
      await waitUntilGone(client, Resources.virtualMachines, vmName, namespace, { timeoutMs: 60_000 }).catch(
        () => undefined,
      );
      await stopGuestCloud({ agent, operator, api, client, host, workDir });
    }, 120_000);

    it("boots with its config drive; ssh with the key logs in, the hostname is the VM's, the user data ran, the password is set", async () => {
      const publicKey = (await readFile(join(workDir, "key.pub"), "utf8")).trim();
      const userData = `#cloud-config\nwrite_files:\n  - path: /var/tmp/stratus-user-data\n    content: "${marker}\\n"\n    permissions: "0644"\n`;
      await client.create(SECRET, {
        metadata: { name: `${vmName}-userdata`, namespace },
        data: { userdata: Buffer.from(userData).toString("base64") },
      } as KubeObject);
      // The password the CloudStack API would write (resetPasswordForVirtualMachine): cloud-init sets it.
      await client.create(SECRET, {
        metadata: { name: `${vmName}-password`, namespace },
        data: { password: Buffer.from(password).toString("base64") },
      } as KubeObject);
      const manifest = {
        apiVersion: "stratus.io/v1alpha1",
        kind: "VirtualMachine",
        metadata: { name: vmName, namespace },
        spec: {
          zone: "login",
          serviceOffering: `login-${suffix}`,
          template: `login-${suffix}`,
          nics: [{ name: "eth0", network: "login-net", ipAddress: address }],
          sshKeys: [publicKey],
          userDataSecret: `${vmName}-userdata`,
          passwordSecret: `${vmName}-password`,
        },
      };
      const applied = await kubectl(kubeconfigPath, ["apply", "-f", "-"], JSON.stringify(manifest));
      expect(applied.stderr).toBe("");
      const vm = await waitFor(
        "the VM Running",
        async () => {
          const found = await client.get<VirtualMachine>(Resources.virtualMachines, vmName, namespace);
          return found.status?.state === "Running" ? found : undefined;
        },
        { timeoutMs: 300_000 },
      );
      const uid = vm.metadata.uid as string;

      // The domain boots with the config drive as a read-only CD-ROM, in the layout cloud-init reads.
      const iso = configDrivePath(join(workDir, "cache"), uid);
      const xml = await virsh("dumpxml", `stratus-${uid}`);
      expect(xml).toMatch(
        new RegExp(`<disk type='file' device='cdrom'>[\\s\\S]*?${iso}[\\s\\S]*?<readonly/>`),
      );
      const drive = await readConfigDrive(iso);
      expect(drive.label).toBe("config-2");
      expect(JSON.parse(drive.files.get("openstack/latest/meta_data.json") ?? "{}")).toMatchObject({
        uuid: uid,
        hostname: vmName,
      });

      // cloud-init installs the key and runs the user data; sshd then answers on the guest network.
      const login = await waitFor(
        "ssh into the guest",
        async () => {
          const result = await ssh("hostname");
          return result.code === 0 ? result : undefined;
        },
        { timeoutMs: 600_000, intervalMs: 3_000 },
      );
      expect(login.stdout.trim()).toBe(vmName);
      // sshd answers before cloud-init's last stages (the password is set in the config stage).
      expect((await ssh("cloud-init status --wait")).stdout).toContain("status: done");
      const file = await ssh("cat /var/tmp/stratus-user-data");
      expect(file.stdout.trim()).toBe(marker);
      // The default user's password is the one in the Secret (checked against /etc/shadow's hash).
      expect(await passwordIs(ssh, password)).toBe(true);

      // A password reset (what resetPasswordForVirtualMachine writes, with the VM stopped) reaches
      // the guest at its next boot, though cloud-init sets passwords once per instance.
      const reset = `pw-${randomBytes(6).toString("hex")}`;
      await client.mergePatch(SECRET, `${vmName}-password`, namespace, {
        data: { password: Buffer.from(reset).toString("base64") },
      });
      const setRunStrategy = (runStrategy: string) =>
        client.mergePatch(Resources.virtualMachines, vmName, namespace, { spec: { runStrategy } });
      await setRunStrategy("Halted");
      await waitFor(
        "the VM Stopped",
        async () =>
          (await client.get<VirtualMachine>(Resources.virtualMachines, vmName, namespace)).status?.state ===
          "Stopped",
        { timeoutMs: 180_000 },
      );
      await setRunStrategy("Always");
      await waitFor(
        "ssh into the restarted guest",
        async () => ((await ssh("true")).code === 0 ? true : undefined),
        { timeoutMs: 600_000, intervalMs: 3_000 },
      );
      // The drive the guest booted from holds the new password.
      const rebuilt = await readConfigDrive(iso);
      expect(rebuilt.files.get("cloudstack/password/vm_password.txt")).toBe(reset);
      await ssh("cloud-init status --wait");
      const why = await ssh(
        "sudo sh -c 'ls -l /var/lib/cloud/scripts/per-boot/; cat /var/lib/stratus-password-applied; grep -i -A3 \"per-boot\\|stratus\" /var/log/cloud-init.log | tail -20; blkid'",
      );
      expect(await passwordIs(ssh, reset), `${why.stdout}${why.stderr}`).toBe(true);

      // Deleted: the domain and its config drive go.
      await client.delete(Resources.virtualMachines, vmName, namespace);
      await waitUntilGone(client, Resources.virtualMachines, vmName, namespace, { timeoutMs: 120_000 });
      expect(existsSync(iso)).toBe(false);
    }, 1_200_000);

    it.skipIf(!hasCs)(
      "does the same through the CloudStack API: createSSHKeyPair, deploy with keypair and userdata, log in; a password reset while stopped works after the start (needs python3-cs)",
      async () => {
        const catalogRole = await catalogReaderRole(client, `login-catalog-${suffix}`);
        const account = await makeAccount(client, {
          keysNamespace: namespace,
          name: "loginapi",
          suffix,
          clusterRoles: [catalogRole],
        });
        await bindCloudUserRole(client, suffix, [account]);
        const cs = (command: string, args: Record<string, string>) =>
          runCs(api.endpoint, account, command, args);
        const zone = await client.create<KubeObject>(Resources.zones, {
          metadata: { name: "login" },
          spec: {},
        } as KubeObject);
        const template = await client.create<KubeObject>(Resources.templates, {
          metadata: { name: `login-pw-${suffix}` },
          spec: {
            source: { hostPath: join(workDir, "debian-cloud.qcow2") },
            format: "qcow2",
            passwordEnabled: true,
          },
        } as KubeObject);
        const offering = await client.get(Resources.serviceOfferings, `login-${suffix}`);
        const apiSubnet = `${subnet.split(".").slice(0, 2).join(".")}.${(Number(subnet.split(".")[2]) + 1) % 250}`;
        const apiAddress = `${apiSubnet}.43`;
        const network = await cs("createNetwork", {
          name: "apinet",
          displaytext: "apinet",
          networkofferingid: "5ce0b2e4-6d1c-4f2b-9a57-2a0f3d8b1c01",
          zoneid: zone.metadata.uid as string,
          gateway: `${apiSubnet}.1`,
          netmask: "255.255.255.0",
        });
        expect(network.stderr, network.stdout).toBe("");
        const pair = await cs("createSSHKeyPair", { name: "laptop" });
        expect(pair.stderr, pair.stdout).toBe("");
        const privateKey = join(workDir, "api-key");
        await writeFile(privateKey, String((pair.json.keypair as Record<string, unknown>).privatekey), {
          mode: 0o600,
        });
        const apiMarker = `written-through-the-api-${suffix}`;
        const userData = `#cloud-config\nwrite_files:\n  - path: /var/tmp/stratus-api-user-data\n    content: "${apiMarker}\\n"\n`;
        const deployed = await cs("deployVirtualMachine", {
          serviceofferingid: offering.metadata.uid as string,
          templateid: template.metadata.uid as string,
          zoneid: zone.metadata.uid as string,
          networkids: (network.json.network as Record<string, unknown>).id as string,
          ipaddress: apiAddress,
          name: "api-login",
          keypair: "laptop",
          userdata: Buffer.from(userData).toString("base64"),
        });
        expect(deployed.stderr, deployed.stdout).toBe("");
        const vm = deployed.json.virtualmachine as Record<string, unknown>;
        expect(vm).toMatchObject({ name: "api-login", state: "Running", keypairs: "laptop" });
        expect(String(vm.password)).toMatch(/^\S{6,}$/);
        const sshApi = (command: string) => sshAs(privateKey, apiAddress, command);
        const login = await waitFor(
          "ssh into the API's guest",
          async () => {
            const result = await sshApi("hostname");
            return result.code === 0 ? result : undefined;
          },
          { timeoutMs: 600_000, intervalMs: 3_000 },
        );
        expect(login.stdout.trim()).toBe("api-login");
        expect((await sshApi("cloud-init status --wait")).stdout).toContain("status: done");
        expect((await sshApi("cat /var/tmp/stratus-api-user-data")).stdout.trim()).toBe(apiMarker);
        expect(await passwordIs(sshApi, String(vm.password))).toBe(true);

        // resetPasswordForVirtualMachine on the stopped VM: the new password, answered once, is the
        // guest's after the start.
        const id = vm.id as string;
        expect((await cs("stopVirtualMachine", { id })).stderr).toBe("");
        const reset = await cs("resetPasswordForVirtualMachine", { id });
        expect(reset.stderr, reset.stdout).toBe("");
        const newPassword = String((reset.json.virtualmachine as Record<string, unknown>).password);
        expect(newPassword).not.toBe(String(vm.password));
        expect((await cs("startVirtualMachine", { id })).stderr).toBe("");
        await waitFor(
          "ssh into the restarted guest",
          async () => ((await sshApi("true")).code === 0 ? true : undefined),
          {
            timeoutMs: 600_000,
            intervalMs: 3_000,
          },
        );
        await sshApi("cloud-init status --wait");
        expect(await passwordIs(sshApi, newPassword)).toBe(true);
        expect((await cs("destroyVirtualMachine", { id, expunge: "true" })).stderr).toBe("");
      },
      1_500_000,
    );
  },
);
