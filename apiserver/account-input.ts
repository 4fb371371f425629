// Pure: what an administrator may ask of createAccount and createUser, checked before anything is
// made: an account's name becomes its namespace (a DNS label, never a system one), its type maps
// to a Stratus role, and a user's name becomes part of a Kubernetes identity. Passwords are kept
// only as scrypt hashes.
import { createHash, randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import { ApiError, ERROR } from "./envelope.ts";
import { DNS_LABEL } from "./params.ts";

export type AccountRole = "User" | "Admin";

/** Namespaces that are never an account: the cluster's and Stratus's own. */
const SYSTEM_NAMESPACES = new Set(["default", "stratus-system", "stratus-api-keys"]);
const MAX_NAMESPACE_LENGTH = 63;
/** CloudStack's user names: printable, no spaces; ours also no `:` (a separator of identities). */
const USERNAME = /^[A-Za-z0-9._@+-]{1,255}$/;
const EMAIL = /^[^\s@]+@[^\s@]+$/;
const MAX_PASSWORD_LENGTH = 255;

/** The namespace an account name becomes, or CloudStack's 431 saying why it cannot. */
export function accountNamespace(name: string): string {
  if (name.length > MAX_NAMESPACE_LENGTH || !DNS_LABEL.test(name))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid account name '${name}': an account is a namespace, so its name must be a DNS label (at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit)`,
    );
  if (SYSTEM_NAMESPACES.has(name) || name.startsWith("kube-"))
    throw new ApiError(ERROR.PARAM, `Invalid account name '${name}': it names a system namespace`);
  return name;
}

/** accounttype (0 user, 1 admin, as CloudStack) or roletype (User, Admin); User when neither. */
export function accountRole(accountType: string | undefined, roleType: string | undefined): AccountRole {
  const byType: Record<string, AccountRole> = { "0": "User", "1": "Admin" };
  const fromType = accountType === undefined ? undefined : byType[accountType];
  if (accountType !== undefined && !fromType)
    throw new ApiError(ERROR.PARAM, `Invalid accounttype ${accountType}: 0 (user) or 1 (admin)`);
  const fromRole =
    roleType === undefined ? undefined : (["User", "Admin"] as const).find((r) => r === roleType);
  if (roleType !== undefined && !fromRole)
    throw new ApiError(ERROR.PARAM, `Invalid roletype ${roleType}: User or Admin`);
  if (fromType && fromRole && fromType !== fromRole)
    throw new ApiError(ERROR.PARAM, `accounttype ${accountType} and roletype ${roleType} disagree`);
  return fromType ?? fromRole ?? "User";
}

export interface UserInput {
  username: string;
  password: string;
  email: string;
  firstname: string;
  lastname: string;
}

export function checkUserInput(input: UserInput): UserInput {
  if (!USERNAME.test(input.username))
    throw new ApiError(
      ERROR.PARAM,
      `Invalid username '${input.username}': 1 to 255 letters, digits and . _ @ + -`,
    );
  if (input.password.length === 0 || input.password.length > MAX_PASSWORD_LENGTH)
    throw new ApiError(ERROR.PARAM, `A password is 1 to ${MAX_PASSWORD_LENGTH} characters`);
  if (!EMAIL.test(input.email)) throw new ApiError(ERROR.PARAM, `Invalid email '${input.email}'`);
  return input;
}

/** The Kubernetes user an account's user acts as (never a system: name). */
export const kubernetesUser = (account: string, username: string) => `cloudstack:${account}:${username}`;

/** A name part unique per CloudStack user name (user names are unique across accounts, as in CloudStack). */
export const usernameDigest = (username: string) =>
  createHash("sha256").update(username).digest("hex").slice(0, 20);

const SCRYPT_KEY_LENGTH = 32;

/** `scrypt$<salt>$<hash>`, base64url: what a user record keeps of a password. */
export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  return `scrypt$${salt.toString("base64url")}$${scryptSync(password, salt, SCRYPT_KEY_LENGTH).toString("base64url")}`;
}

/** Constant-time check of a password against hashPassword's output; false for anything malformed. */
export function passwordMatchesHash(password: string, stored: string): boolean {
  const [scheme, salt, hash] = stored.split("$");
  if (scheme !== "scrypt" || !salt || !hash) return false;
  const expected = Buffer.from(hash, "base64url");
  if (expected.length !== SCRYPT_KEY_LENGTH) return false;
  return timingSafeEqual(scryptSync(password, Buffer.from(salt, "base64url"), SCRYPT_KEY_LENGTH), expected);
}
