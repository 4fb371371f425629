// The config drive: a small read-only ISO 9660 image, label `config-2`, that cloud-init's
// ConfigDrive datasource reads at boot (openstack/latest/...), with CloudStack's own `cloudstack/`
// folder beside it for guests that run CloudStack's scripts. Built with Debian's xorriso, never by
// hand; rebuilt only when its content changes (the guest sees a change at its next boot, as in
// CloudStack), and removed with the VM's domain.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

export const CONFIG_DRIVE_LABEL = "config-2";
/** CloudStack's limits: 32 KiB of user data, a 64 MiB drive. */
export const USER_DATA_MAX_BYTES = 32 * 1024;
export const CONFIG_DRIVE_MAX_BYTES = 64 * 1024 * 1024;
export const PASSWORD_MAX_BYTES = 256;
export const PUBLIC_KEYS_MAX = 32;

export interface ConfigDriveNic {
  mac: string;
  /** A static IPv4 address and its network, when the network has addresses. */
  ipv4?: { address: string; prefixLength: number; gateway?: string };
  dns: string[];
}

export interface ConfigDriveContent {
  vm: { uid: string; name: string; namespace: string };
  zone: string;
  serviceOffering: string;
  publicKeys: string[];
  /** The user data as the guest gets it (decoded). */
  userData?: Buffer;
  /** A password for the default user, set by cloud-init. */
  password?: string;
  nics: ConfigDriveNic[];
}

/** Content that cannot go into a config drive: the user can fix it (a condition says what). */
export class ConfigDriveError extends Error {}

/** Whether the VM needs a config drive at all: only what it has to tell its guest. */
export function needsConfigDrive(content: Pick<ConfigDriveContent, "publicKeys" | "userData" | "password">) {
  return content.publicKeys.length > 0 || content.userData !== undefined || content.password !== undefined;
}

function prefixToNetmask(prefixLength: number): string {
  const bits = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join(".");
}

/** Pure: the drive's files (path -> content), in the OpenStack and CloudStack layouts. */
export function configDriveFiles(content: ConfigDriveContent): Map<string, Buffer> {
  const { vm } = content;
  if (content.userData && content.userData.length > USER_DATA_MAX_BYTES)
    throw new ConfigDriveError(
      `user data is ${content.userData.length} bytes; a config drive takes at most ${USER_DATA_MAX_BYTES}`,
    );
  if (content.password !== undefined && Buffer.byteLength(content.password) > PASSWORD_MAX_BYTES)
    throw new ConfigDriveError(`the password is longer than ${PASSWORD_MAX_BYTES} bytes`);
  if (content.publicKeys.length > PUBLIC_KEYS_MAX)
    throw new ConfigDriveError(`${content.publicKeys.length} SSH keys; at most ${PUBLIC_KEYS_MAX}`);
  const keys = content.publicKeys.map((key) => key.trim());
  if (keys.some((key) => /[\r\n]/.test(key) || key === ""))
    throw new ConfigDriveError("an SSH public key must be one non-empty line");

  const files = new Map<string, Buffer>();
  const text = (path: string, value: string) => files.set(path, Buffer.from(value));
  text(
    "openstack/latest/meta_data.json",
    JSON.stringify({
      uuid: vm.uid,
      name: vm.name,
      hostname: vm.name,
      availability_zone: content.zone,
      project_id: vm.namespace,
      launch_index: 0,
      public_keys: Object.fromEntries(keys.map((key, index) => [`key-${index}`, key])),
      keys: keys.map((key, index) => ({ name: `key-${index}`, type: "ssh", data: key })),
      ...(content.password !== undefined ? { admin_pass: content.password } : {}),
    }),
  );
  if (content.userData) files.set("openstack/latest/user_data", content.userData);
  // cloud-init sets the password from vendor data (it does not read admin_pass); user data may
  // still override it, as on OpenStack. cloud-init sets it once per instance, so vendor data also
  // installs a per-boot script that applies a password reset at the next boot.
  const vendorConfig = {
    ...(content.password !== undefined
      ? { password: content.password, chpasswd: { expire: false }, ssh_pwauth: true }
      : {}),
    bootcmd: [PASSWORD_RESET_SCRIPT],
  };
  text(
    "openstack/latest/vendor_data.json",
    JSON.stringify({ "cloud-init": `#cloud-config\n${JSON.stringify(vendorConfig)}\n` }),
  );
  text("openstack/latest/network_data.json", JSON.stringify(networkData(content.nics)));

  // CloudStack's layout (ConfigDriveBuilder): one file per item, `.txt`, beside `openstack/`.
  const metadata: Record<string, string> = {
    "vm-id": vm.uid,
    "instance-id": vm.uid,
    "local-hostname": vm.name,
    "vm-name": vm.name,
    "availability-zone": content.zone,
    "service-offering": content.serviceOffering,
    ...(content.nics[0]?.ipv4 ? { "local-ipv4": content.nics[0].ipv4.address } : {}),
    ...(keys.length > 0 ? { "public-keys": `${keys.join("\n")}\n` } : {}),
  };
  for (const [name, value] of Object.entries(metadata)) text(`cloudstack/metadata/${name}.txt`, value);
  if (content.userData) files.set("cloudstack/userdata/user_data.txt", content.userData);
  if (content.password !== undefined) text("cloudstack/password/vm_password.txt", content.password);
  return files;
}

/**
 * CloudStack's cloud-set-guest-password, for cloud-init guests, as a `bootcmd` (run at every boot;
 * a key user data rarely sets, unlike write_files, whose list in user data would replace this one):
 * a password in the config drive that differs from the last one applied is set for cloud-init's
 * default user (named in the sudoers rule cloud-init writes; the first regular user otherwise).
 * At the first boot that user does not exist yet and cloud-init sets the password itself; the
 * password's hash is recorded either way, so a password changed inside the guest is kept until
 * the next reset. Only the hash is kept.
 */
export const PASSWORD_RESET_SCRIPT = `# Stratus (vendor data): applies resetPasswordForVirtualMachine at the next boot.
# No exit: other boot commands may follow this one.
device=$(blkid -t LABEL=config-2 -o device | head -n 1)
mnt=$(mktemp -d)
if [ -n "$device" ] && mount -o ro "$device" "$mnt" 2>/dev/null; then
  file="$mnt/cloudstack/password/vm_password.txt"
  if [ -s "$file" ]; then
    sum=$(sha256sum "$file" | cut -d " " -f 1)
    if [ "$sum" != "$(cat /var/lib/stratus-password-applied 2>/dev/null)" ]; then
      user=$(awk '/^# User rules for /{print $5; exit}' /etc/sudoers.d/90-cloud-init-users 2>/dev/null)
      [ -n "$user" ] || user=$(getent passwd 1000 | cut -d: -f1)
      if [ -z "$user" ] || printf '%s:%s\\n' "$user" "$(head -n 1 "$file")" | chpasswd; then
        echo "$sum" > /var/lib/stratus-password-applied
        chmod 600 /var/lib/stratus-password-applied
      fi
    fi
  fi
  umount "$mnt"
fi
rmdir "$mnt"
`;

/** OpenStack's network_data.json: each NIC by MAC, its static address, the DNS servers. */
function networkData(nics: ConfigDriveNic[]) {
  const links = nics.map((nic, index) => ({
    id: `eth${index}`,
    type: "phy",
    ethernet_mac_address: nic.mac,
    mtu: 1500,
  }));
  const networks = nics.flatMap((nic, index) =>
    nic.ipv4
      ? [
          {
            id: `network${index}`,
            link: `eth${index}`,
            type: "ipv4",
            ip_address: nic.ipv4.address,
            netmask: prefixToNetmask(nic.ipv4.prefixLength),
            // Only the first NIC carries the default route (the VM spec says so).
            routes:
              index === 0 && nic.ipv4.gateway
                ? [{ network: "0.0.0.0", netmask: "0.0.0.0", gateway: nic.ipv4.gateway }]
                : [],
          },
        ]
      : [{ id: `network${index}`, link: `eth${index}`, type: "ipv4_dhcp" }],
  );
  const dns = [...new Set(nics.flatMap((nic) => nic.dns))];
  return { links, networks, services: dns.map((address) => ({ type: "dns", address })) };
}

/** The digest the drive is rebuilt on: every path and its content. */
export function configDriveDigest(files: ReadonlyMap<string, Buffer>): string {
  const hash = createHash("sha256");
  for (const path of [...files.keys()].sort()) {
    hash.update(`${path}\0${files.get(path)?.length}\0`);
    hash.update(files.get(path) as Buffer);
  }
  return hash.digest("hex");
}

function xorriso(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile("xorriso", args, { maxBuffer: 4 << 20 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const missing = (error as NodeJS.ErrnoException).code === "ENOENT";
      reject(
        new Error(
          missing
            ? "xorriso is not installed (Debian's xorriso): config drives cannot be built"
            : `xorriso ${args[0]}: ${stderr.trim().split("\n").slice(-3).join(" ") || error.message}`,
        ),
      );
    }),
  );
}

/** Refuses to go on without xorriso (a real hypervisor's agent checks this at start). */
export async function requireXorriso(): Promise<void> {
  await xorriso(["-version"]);
}

/** Writes the ISO at `isoPath` (replaced whole: a running guest keeps the drive it booted with). */
export async function writeConfigDrive(files: ReadonlyMap<string, Buffer>, isoPath: string): Promise<void> {
  await mkdir(dirname(isoPath), { recursive: true, mode: 0o755 });
  const staging = await mkdtemp(join(dirname(isoPath), ".staging-"));
  try {
    const tree = join(staging, "tree");
    for (const [path, data] of files) {
      await mkdir(dirname(join(tree, path)), { recursive: true });
      await writeFile(join(tree, path), data, { mode: 0o644 });
    }
    const partial = join(staging, "drive.iso");
    // Rock Ridge and Joliet keep the long, lower-case names cloud-init looks for.
    await xorriso(["-as", "mkisofs", "-quiet", "-R", "-J", "-V", CONFIG_DRIVE_LABEL, "-o", partial, tree]);
    const size = (await stat(partial)).size;
    if (size > CONFIG_DRIVE_MAX_BYTES)
      throw new ConfigDriveError(
        `the config drive would be ${size} bytes; at most ${CONFIG_DRIVE_MAX_BYTES}`,
      );
    await rename(partial, isoPath);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

const digestPath = (isoPath: string) => `${isoPath}.sha256`;

/** Builds the drive unless the one at `isoPath` has this content already. True when it was built. */
export async function ensureConfigDrive(content: ConfigDriveContent, isoPath: string): Promise<boolean> {
  const files = configDriveFiles(content);
  const digest = configDriveDigest(files);
  const current = await readFile(digestPath(isoPath), "utf8").catch(() => undefined);
  if (current === digest && (await stat(isoPath).catch(() => undefined))) return false;
  await writeConfigDrive(files, isoPath);
  await writeFile(digestPath(isoPath), digest);
  return true;
}

export async function removeConfigDrive(isoPath: string): Promise<void> {
  await rm(isoPath, { force: true });
  await rm(digestPath(isoPath), { force: true });
}

/** The files of an ISO (path -> content), read back with xorriso: for tests and diagnostics. */
export async function readConfigDrive(
  isoPath: string,
): Promise<{ label: string; files: Map<string, string> }> {
  const extracted = await mkdtemp(join(dirname(isoPath), ".read-"));
  try {
    const report = await xorriso(["-indev", isoPath, "-pvd_info", "-find", "/", "-type", "f"]);
    await xorriso(["-osirrox", "on", "-indev", isoPath, "-extract", "/", extracted]);
    const label = /Volume Id\s*:\s*(\S+)/.exec(report)?.[1] ?? "";
    const paths = [...report.matchAll(/^'\/(.+)'$/gm)].map((match) => match[1] as string);
    const files = new Map<string, string>();
    for (const path of paths) files.set(path, await readFile(join(extracted, path), "utf8"));
    return { label, files };
  } finally {
    await rm(extracted, { recursive: true, force: true });
  }
}
