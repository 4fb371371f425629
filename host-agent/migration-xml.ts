// Pure: the definition a live-migrated guest gets on its target host. It is the source's
// migratable XML with what is host-specific rewritten, as CloudStack's KVM agent rewrites the
// migration XML: the libvirt networks and bridges (named after the owning agent) become the
// target agent's, and the serial console's socket moves to the target's console directory. The
// owner mark stays the source's until compute binds the VM to the target and its agent adopts it.
import { CONFIG_DRIVE_TARGET, ISO_DRIVE_TARGET } from "./domain-xml.ts";
import type { Owner } from "./hypervisor.ts";
import { bridgeName, networkPrefix } from "./network-xml.ts";
import { escapeXml } from "./xml.ts";

export interface MigrationDestination {
  owner: Owner;
  /** The console socket the target's agent serves this guest's console from. */
  consoleSocket?: string;
  /** The config drive the target's agent built for this guest; without it the CD-ROM arrives empty. */
  configDrive?: string;
  /** The ISO drive's disc as the target's agent copied it; without it the drive stays as it is. */
  iso?: string;
}

export function destinationXml(xml: string, source: Owner, destination: MigrationDestination): string {
  const from = networkPrefix(source);
  const to = networkPrefix(destination.owner);
  const networkUids = new Set(
    [...xml.matchAll(new RegExp(`${from}([0-9a-f-]{36})`, "g"))].map((match) => match[1] as string),
  );
  let rewritten = xml.replaceAll(from, to).replace(/\s+portid=(['"])[^'"]*\1/g, "");
  for (const uid of networkUids)
    rewritten = rewritten.replaceAll(bridgeName(source, uid), bridgeName(destination.owner, uid));
  if (destination.consoleSocket) {
    const socket = escapeXml(destination.consoleSocket);
    rewritten = rewritten.replace(
      /(<(?:serial|console) type=(['"])unix\2>\s*<source mode=(['"])bind\3 path=)(['"])[^'"]*\4/g,
      (_match, head: string) => `${head}'${socket}'`,
    );
  }
  const withDrive = withDisc(rewritten, CONFIG_DRIVE_TARGET, destination.configDrive);
  return destination.iso ? withDisc(withDrive, ISO_DRIVE_TARGET, destination.iso) : withDrive;
}

/**
 * A CD-ROM's disc is a file of the source host: the drive at `target` points at the target's own
 * copy, or is left without media. The config drive: a guest reads it only at boot, and the target
 * builds it for the next one. The ISO drive: the target copies the disc before it is ready.
 */
function withDisc(xml: string, target: string, path: string | undefined): string {
  return xml.replace(/<disk\b[^>]*device=(['"])cdrom\1[^>]*>[\s\S]*?<\/disk>/g, (drive) => {
    if (!new RegExp(`<target dev=(['"])${target}\\1`).test(drive)) return drive;
    const emptied = drive.replace(/<source file=(['"])[^'"]*\1\s*\/>\s*/, "");
    return path
      ? emptied.replace(/<target /, `<source file='${escapeXml(path)}'/>\n      <target `)
      : emptied;
  });
}
