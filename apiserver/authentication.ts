// Who is calling /client/api: an API key with a signature over the request (CloudStack's
// ApiServer.verifyRequest, the cheap refusals before any HMAC), or a login session presented as
// both the `sessionkey` parameter and cookie. Login is a form POST, throttled per user and per
// address; logout revokes the session on every replica (session-revocations.ts).
import { randomBytes } from "node:crypto";
import type { KubeClient, KubeObject, ResourceType } from "../runtime/client.ts";
import type { InformerFactory } from "../runtime/component.ts";
import type { Informer } from "../runtime/informer.ts";
import { passwordMatchesHash } from "./account-input.ts";
import {
  ApiError,
  ERROR,
  type Rendered,
  ROOT_DOMAIN_ID,
  render,
  responseName,
  UNAUTHORIZED_TEXT,
} from "./envelope.ts";
import { LoginThrottle } from "./login-throttle.ts";
import type { RequestParams } from "./params.ts";
import { SessionRevocations } from "./session-revocations.ts";
import {
  assertSigningKey,
  issueSession,
  passwordMatches,
  readSession,
  SESSION_SECONDS,
  type Session,
  sessionCookieHeaders,
  sessionCookies,
} from "./sessions.ts";
import { parseExpires, verifySignature } from "./signature.ts";

export const SECRET: ResourceType = {
  group: "",
  version: "v1",
  plural: "secrets",
  kind: "Secret",
  namespaced: true,
};
export const API_KEY_LABEL = "stratus.io/api-key";
/** CloudStack's own limit on a user name. */
const MAX_USERNAME_LENGTH = 255;

export interface Secret extends KubeObject {
  data?: Record<string, string>;
}

/** Who is calling: the Kubernetes user an API key maps to, and its account (namespace). */
export interface Caller {
  user: string;
  groups: string[];
  account: string;
  /** Requests as that user. */
  client: KubeClient;
}

/** What the HTTP layer knows of a request beyond its parameters. */
export interface ClientRequest {
  method: string;
  query: URLSearchParams;
  form: URLSearchParams;
  cookieHeader?: string | undefined;
  remoteAddress: string;
  /** Whether the client reached us over TLS (here, or at a proxy that says so). */
  secure: boolean;
}

type Format = "json" | "xml";

const unauthorized = () => new ApiError(ERROR.UNAUTHORIZED, UNAUTHORIZED_TEXT);

export class Authentication {
  private readonly client: KubeClient;
  private readonly keys: Informer<Secret>;
  private readonly keysNamespace: string;
  private readonly revocations: SessionRevocations;
  private readonly throttle = new LoginThrottle();
  /** Signs sessions; main.ts sets the one every replica shares. */
  private signingKey: Buffer = randomBytes(32);

  constructor(options: { client: KubeClient; informers: InformerFactory; keysNamespace: string }) {
    this.client = options.client;
    this.keysNamespace = options.keysNamespace;
    this.keys = options.informers.for<Secret>(SECRET, {
      namespace: options.keysNamespace,
      labelSelector: API_KEY_LABEL,
      indexers: { apiKey: (secret) => (secret.data?.apiKey ? [decode(secret.data.apiKey)] : []) },
    });
    this.revocations = new SessionRevocations(options.client, options.informers, options.keysNamespace);
  }

  useSigningKey(key: Buffer): void {
    assertSigningKey(key);
    this.signingKey = key;
  }

  /** login: username and password of an account's key Secret give a session (docs/LEGACY-API.md 1.7). */
  login(params: RequestParams, request: ClientRequest, format: Format, now = Date.now()): Rendered {
    // A password in a URL ends up in proxy and server logs and in browser history.
    if (request.method !== "POST")
      throw new ApiError(ERROR.METHOD_NOT_ALLOWED, "Please use HTTP POST to authenticate using this API");
    if ([...request.query.keys()].some((name) => name.toLowerCase() === "password"))
      throw new ApiError(
        ERROR.METHOD_NOT_ALLOWED,
        "Please send the password in the POST body, never in the URL, to authenticate using this API",
      );
    const username = params.required("username");
    const password = params.required("password");
    if (username.length > MAX_USERNAME_LENGTH)
      throw new ApiError(ERROR.PARAM, `A username is at most ${MAX_USERNAME_LENGTH} characters`);
    const refusal = this.throttle.refusal(username, request.remoteAddress, now);
    if (refusal)
      throw new ApiError(
        ERROR.API_LIMIT_EXCEEDED,
        `Too many failed login attempts ${refusal.by === "user" ? `for user ${username}` : `from ${request.remoteAddress}`}, please retry after ${Math.ceil(refusal.retryAfterMs / 1000)} s`,
      );
    const secret = this.keys.list().find((s) => s.data?.username && decode(s.data.username) === username);
    if (!secret || !passwordOfRecordMatches(secret, password)) {
      this.throttle.failed(username, request.remoteAddress, now);
      throw new ApiError(
        ERROR.UNAUTHORIZED,
        `Failed to authenticate user ${username}; please provide valid credentials`,
      );
    }
    this.throttle.succeeded(username);
    const caller = this.callerOf(secret);
    const sessionKey = issueSession(secret.metadata.name as string, this.signingKey, now);
    return {
      ...render(
        "loginresponse",
        {
          username,
          userid: secret.metadata.uid as string,
          domainid: ROOT_DOMAIN_ID,
          timeout: SESSION_SECONDS,
          account: caller.account,
          firstname: username,
          lastname: username,
          type: "0",
          timezone: "UTC",
          registered: "false",
          sessionkey: sessionKey,
          is2faenabled: "false",
          is2faverified: "true",
        },
        format,
      ),
      cookies: sessionCookieHeaders(sessionKey, { secure: request.secure }),
    };
  }

  /** logout: the session, if that is how the caller came, is refused from now on everywhere. */
  async logout(session: Session | undefined, request: ClientRequest, format: Format): Promise<Rendered> {
    const secret = session && this.keys.get(`${this.keysNamespace}/${session.keySecret}`);
    if (session && secret) await this.revocations.revoke(session, secret);
    return {
      ...render(responseName("logout"), { description: "success" }, format),
      cookies: sessionCookieHeaders(undefined, { secure: request.secure }),
    };
  }

  /** The caller of a request other than login, with its session when it came with one. */
  authenticate(params: RequestParams, request: ClientRequest): { caller: Caller; session?: Session } {
    const apiKey = params.get("apikey");
    if (!apiKey) {
      const session = this.session(params, request);
      const secret = this.keys.get(`${this.keysNamespace}/${session.keySecret}`);
      if (!secret) throw unauthorized();
      return { caller: this.callerOf(secret), session };
    }
    // Cheapest refusals first: an HMAC over a large request is the expensive part.
    const signature = params.get("signature");
    if (!signature) throw unauthorized();
    const [secret] = this.keys.byIndex("apiKey", apiKey);
    const secretKey = secret?.data?.secretKey ? decode(secret.data.secretKey) : undefined;
    if (!secret || !secretKey) throw unauthorized();
    if (params.get("signatureversion") === "3") {
      const expires = parseExpires(params.get("expires") ?? "");
      if (!expires || expires.getTime() < Date.now()) throw unauthorized();
    }
    if (!verifySignature(params.raw, signature, secretKey)) throw unauthorized();
    return { caller: this.callerOf(secret) };
  }

  /**
   * The session of a request: its key as the `sessionkey` parameter and as a cookie, both, as
   * CloudStack's default CookieAndParameter check wants. A cookie alone is what another site's
   * page can make a browser send (CSRF); a parameter alone is a key lifted from a URL or a log.
   */
  private session(params: RequestParams, request: ClientRequest): Session {
    const sessionKey = params.get("sessionkey");
    if (!sessionKey || !sessionCookies(request.cookieHeader).includes(sessionKey)) throw unauthorized();
    const session = readSession(sessionKey, this.signingKey);
    if (!session || this.revocations.isRevoked(session)) throw unauthorized();
    return session;
  }

  private callerOf(secret: Secret): Caller {
    const data = secret.data ?? {};
    const user = data.user ? decode(data.user) : "";
    const account = data.account ? decode(data.account) : "";
    if (!user || !account) throw unauthorized();
    const groups = data.groups
      ? decode(data.groups)
          .split(",")
          .map((g) => g.trim())
          .filter(Boolean)
      : [];
    return { user, groups, account, client: this.client.impersonating(user, groups) };
  }
}

/** A user made by createAccount/createUser keeps a scrypt hash; a key Secret written by hand, the password. */
function passwordOfRecordMatches(secret: Secret, password: string): boolean {
  const data = secret.data ?? {};
  if (data.passwordHash) return passwordMatchesHash(password, decode(data.passwordHash));
  return passwordMatches(password, data.password ? decode(data.password) : "");
}

function decode(value: string): string {
  return Buffer.from(value, "base64").toString("utf8");
}
