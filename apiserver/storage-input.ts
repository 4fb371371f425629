// Pure: the storage parameters of CloudStack's commands read into StoragePool and offering fields,
// each with its limit and CloudStack's 431 saying what is accepted.
import type { PoolType, StorageType } from "../crds/index.ts";
import { STORAGE_TYPES } from "../crds/index.ts";
import { ApiError, ERROR } from "./envelope.ts";

/** Where hosts mount an nfs pool: `/mnt/stratus/<pool name>`, the same on every host. */
export const NFS_MOUNT_ROOT = "/mnt/stratus";

export const SUPPORTED_POOL_URLS =
  "SharedMountPoint:///<path> (or sharedmountpoint://<any host>/<path>) and nfs://<server>/<export path>";

const MAX_URL_LENGTH = 2048;
const MAX_TAGS = 32;
const MAX_TAG_LENGTH = 63;
/** As crds/schema.ts AbsolutePath: nothing a shell or libvirt XML would read twice. */
const ABSOLUTE_PATH = /^\/[A-Za-z0-9._/-]{1,1023}$/;
const HOST_NAME = /^[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?$/;
const URL_FORM = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)$/;

export interface PoolLocation {
  type: Exclude<PoolType, "local">;
  path: string;
  nfs?: { server: string; exportPath: string };
}

function invalidUrl(url: string, why: string): ApiError {
  return new ApiError(
    ERROR.PARAM,
    `Invalid parameter url value=${url}: ${why}. Stratus supports ${SUPPORTED_POOL_URLS}`,
  );
}

/** A path from the URL: decoded, absolute, without `..`, trailing slashes dropped. */
function poolPath(url: string, encoded: string, what: string): string {
  let path: string;
  try {
    path = decodeURIComponent(encoded);
  } catch {
    throw invalidUrl(url, `the ${what} is not valid percent-encoding`);
  }
  path = path.replace(/\/+$/, "");
  if (!ABSOLUTE_PATH.test(path))
    throw invalidUrl(
      url,
      `the ${what} must be an absolute path other than / of at most 1024 letters, digits and . _ - /`,
    );
  if (path.split("/").includes("..")) throw invalidUrl(url, `the ${what} may not contain ..`);
  return path;
}

/** CloudStack's primary storage URL (createStoragePool `url`) as a shared pool's location. */
export function parsePoolUrl(url: string, poolName: string): PoolLocation {
  if (url.length > MAX_URL_LENGTH) throw invalidUrl(url.slice(0, 64), "it is longer than 2048 characters");
  const match = URL_FORM.exec(url.trim());
  if (!match) throw invalidUrl(url, "it is not of the form scheme://host/path");
  const [, scheme = "", authority = "", path = ""] = match;
  switch (scheme.toLowerCase()) {
    case "sharedmountpoint":
      // CloudStack ignores the host of a SharedMountPoint URL (its UI sends localhost).
      return { type: "sharedMountPoint", path: poolPath(url, path, "mount point") };
    case "nfs": {
      if (authority.includes("@")) throw invalidUrl(url, "an NFS URL carries no user");
      if (authority.includes(":"))
        throw invalidUrl(url, "Stratus mounts NFS on its default port: drop the port");
      if (!HOST_NAME.test(authority))
        throw invalidUrl(url, "the NFS server must be a host name or IPv4 address");
      return {
        type: "nfs",
        path: `${NFS_MOUNT_ROOT}/${poolName}`,
        nfs: { server: authority, exportPath: poolPath(url, path, "export path") },
      };
    }
    case "file":
      throw invalidUrl(url, "local storage is not added by hand: every host gets its local pool by itself");
    default:
      throw invalidUrl(url, `the scheme ${scheme} is not supported`);
  }
}

/** A comma-separated tag list (`tags`, `hosttags`): at most 32 tags of 1 to 63 characters, no duplicates. */
export function tagList(parameter: string, value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const tags = [
    ...new Set(
      value
        .split(",")
        .map((tag) => tag.trim())
        .filter(Boolean),
    ),
  ];
  if (tags.length > MAX_TAGS)
    throw new ApiError(ERROR.PARAM, `Invalid parameter ${parameter}: at most ${MAX_TAGS} tags`);
  const long = tags.find((tag) => tag.length > MAX_TAG_LENGTH);
  if (long)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter ${parameter} value=${long}: a tag has at most ${MAX_TAG_LENGTH} characters`,
    );
  return tags;
}

/** The `storagetype` of an offering: local or shared, in any case. */
export function storageType(value: string | undefined): StorageType | undefined {
  if (value === undefined || value === "") return undefined;
  const type = STORAGE_TYPES.find((t) => t === value.toLowerCase());
  if (!type)
    throw new ApiError(
      ERROR.PARAM,
      `Invalid parameter storagetype value=${value}: it is ${STORAGE_TYPES.join(" or ")}`,
    );
  return type;
}
