// Pure: what a router's metadata service answers one guest, CloudStack's virtual-router layout
// (`http://<gateway>/latest/user-data`, `/latest/meta-data/<key>`), which cloud-init's CloudStack
// and EC2-style data sources read. The same content as the guest's config drive.
import type { ConfigDriveContent } from "../config-drive.ts";

/** `latest/meta-data` (the index cloud-init crawls) is a directory too: its listing lives here. */
const META_DATA_INDEX = "latest/meta-data/index";

/** The guest's files by their path below its directory. */
export function metadataFiles(
  content: ConfigDriveContent,
  localIpv4: string,
  publicIpv4?: string,
): Map<string, Buffer> {
  const meta: Record<string, string> = {
    "instance-id": content.vm.uid,
    "vm-id": content.vm.uid,
    "local-hostname": content.vm.name,
    "public-hostname": content.vm.name,
    "local-ipv4": localIpv4,
    ...(publicIpv4 ? { "public-ipv4": publicIpv4 } : {}),
    "availability-zone": content.zone,
    "service-offering": content.serviceOffering,
    ...(content.publicKeys.length > 0 ? { "public-keys": `${content.publicKeys.join("\n")}\n` } : {}),
  };
  const files = new Map<string, Buffer>();
  for (const [key, value] of Object.entries(meta)) files.set(`latest/meta-data/${key}`, Buffer.from(value));
  files.set(META_DATA_INDEX, Buffer.from(`${Object.keys(meta).join("\n")}\n`));
  files.set("latest/user-data", content.userData ?? Buffer.alloc(0));
  return files;
}

/** The file a request path names, or undefined: only the layout's own names, never a way out. */
export function metadataPath(url: string): string | undefined {
  const path = url.split("?")[0]?.replace(/^\/+|\/+$/g, "") ?? "";
  if (path === "latest/user-data") return path;
  if (path === "latest/meta-data") return META_DATA_INDEX;
  const key = /^latest\/meta-data\/([a-z0-9-]{1,64})$/.exec(path)?.[1];
  return key ? `latest/meta-data/${key}` : undefined;
}
