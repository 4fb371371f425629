// 802.1Q tagging for a network's bridge: a VLAN sub-interface of the host's uplink, enslaved to
// the bridge libvirt made for the network, as CloudStack's KVM agent does (ethX.VLAN in brethX-VLAN).
// libvirt's interface driver cannot create these, so this drives iproute2.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { HostProblem } from "./problem.ts";

const run = promisify(execFile);

/** Every VLAN link Stratus creates starts with this; others are never touched. */
export const VLAN_LINK_PREFIX = "svl";

/** Linux limits interface names to 15 characters: one link per network bridge (sbrXXXX -> svlXXXX). */
export function vlanLinkName(bridge: string): string {
  return `${VLAN_LINK_PREFIX}${bridge.slice(3)}`;
}

interface LinkInfo {
  ifname: string;
  link?: string;
  master?: string;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
}

async function ip(...args: string[]): Promise<string> {
  try {
    return (await run("ip", args)).stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new HostProblem("VlanSetupFailed", `ip ${args.join(" ")}: ${stderr || (error as Error).message}`);
  }
}

async function links(): Promise<LinkInfo[]> {
  return JSON.parse(await ip("-j", "-d", "link", "show")) as LinkInfo[];
}

/** Makes `name` a VLAN `vlan` sub-interface of `uplink`, up and enslaved to `bridge`. */
export async function ensureVlanLink(options: {
  uplink: string;
  vlan: number;
  name: string;
  bridge: string;
}): Promise<void> {
  const { uplink, vlan, name, bridge } = options;
  const all = await links();
  if (!all.some((l) => l.ifname === uplink))
    throw new HostProblem(
      "VlanUplinkMissing",
      `the VLAN uplink interface ${uplink} does not exist on this host`,
    );
  const current = all.find((l) => l.ifname === name);
  const right =
    current?.linkinfo?.info_kind === "vlan" &&
    current.linkinfo.info_data?.id === vlan &&
    current.link === uplink;
  if (current && !right) await ip("link", "delete", "dev", name);
  if (!current || !right)
    await ip("link", "add", "link", uplink, "name", name, "type", "vlan", "id", String(vlan));
  if (current?.master !== bridge || !right) await ip("link", "set", "dev", name, "master", bridge);
  if (!current?.flags?.includes("UP") || !right) await ip("link", "set", "dev", name, "up");
}

/** Removes the VLAN link of a bridge this agent removed; other agents' links are never touched. */
export async function removeVlanLink(bridge: string): Promise<boolean> {
  const name = vlanLinkName(bridge);
  if (!(await links()).some((l) => l.ifname === name && l.linkinfo?.info_kind === "vlan")) return false;
  await ip("link", "delete", "dev", name);
  return true;
}
