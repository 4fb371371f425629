// The aggregated API subresources.stratus.io/v1alpha1, registered with an APIService like
// KubeVirt's virt-api: virtualmachines/{start,stop,restart} (PUT), virtualmachines/console (a
// WebSocket to the guest's serial console, relayed from its host agent) and
// virtualmachines/userdata (GET: the user data and password, for the agent of the VM's host). kube-apiserver
// authenticates the user and forwards as the front proxy: this server accepts only connections
// with the front-proxy client certificate, reads the user from X-Remote-User/Group, and authorizes
// every call with a SubjectAccessReview on the full subresource.

import type { KeyObject } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import { type Duplex, pipeline } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import WebSocket, { type ClientOptions, createWebSocketStream, WebSocketServer } from "ws";
import { displayState } from "../crds/display-state.ts";
import {
  type Host,
  isFinalMigrationPhase,
  RESTART_ANNOTATION,
  Resources,
  type VirtualMachine,
  type VirtualMachineMigration,
} from "../crds/index.ts";
import { isAllowed } from "../runtime/authorization.ts";
import { isNotFound, type KubeClient } from "../runtime/client.ts";
import { CONSOLE_MAX_MESSAGE_BYTES, issueConsoleTicket } from "../runtime/console-ticket.ts";
import { unlessGone } from "../runtime/objects.ts";
import { SECRET, type Secret } from "./api.ts";
import { VM_PASSWORD_KEY } from "./guest-login.ts";
import { USER_DATA_KEY } from "./user-data.ts";

export const SUBRESOURCE_GROUP = "subresources.stratus.io";
export const SUBRESOURCE_VERSION = "v1alpha1";
const PREFIX = `/apis/${SUBRESOURCE_GROUP}/${SUBRESOURCE_VERSION}`;
const ROUTE = new RegExp(
  `^${PREFIX}/namespaces/([^/]+)/virtualmachines/([^/]+)/(start|stop|restart|console|userdata)$`,
);
const ACTIONS = ["start", "stop", "restart"] as const;
/** Every host agent's identity (the DaemonSet's ServiceAccount); its pod-bound token names its node. */
export const HOST_AGENT_USER = "system:serviceaccount:stratus-system:stratus-host-agent";
const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";
const EXTRA_HEADER = "x-remote-extra-";

export interface SubresourceServerOptions {
  client: KubeClient;
  logger: Logger;
  tls: { cert: string; key: string; clientCa: string };
  /** Common names the front-proxy client certificate may have (empty: any the CA signed). */
  allowedNames: readonly string[];
  /** The key console tickets are signed with (Ed25519; the host agents hold the public half). */
  consoleKey?: KeyObject;
}

interface Requester {
  user: string;
  groups: string[];
  /** The user's extra attributes the front proxy passes on (a host agent's node name). */
  extra: Record<string, string[]>;
}

export class SubresourceServer {
  private readonly server: Server;
  private readonly sockets = new WebSocketServer({ noServer: true, maxPayload: CONSOLE_MAX_MESSAGE_BYTES });
  private readonly options: SubresourceServerOptions;

  constructor(options: SubresourceServerOptions) {
    this.options = options;
    this.server = createServer(
      {
        cert: options.tls.cert,
        key: options.tls.key,
        ca: options.tls.clientCa,
        requestCert: true,
        rejectUnauthorized: false,
      },
      (request, response) => {
        this.serve(request, response).catch((error: unknown) => {
          options.logger.error({ err: String(error) }, "subresource request failed");
          if (!response.headersSent) status(response, 500, "InternalError", "internal error");
        });
      },
    );
    this.server.on("upgrade", (request, socket, head) => {
      this.console(request, socket, head).catch((error: unknown) => {
        options.logger.error({ err: String(error) }, "console failed");
        socket.destroy();
      });
    });
  }

  async listen(host: string, port: number): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(port, host, resolve));
    const address = this.server.address();
    return typeof address === "object" && address ? address.port : port;
  }

  async close(): Promise<void> {
    for (const client of this.sockets.clients) client.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The user the front proxy vouches for, or undefined when the caller is not the front proxy. */
  private requester(request: IncomingMessage): Requester | undefined {
    const socket = request.socket as TLSSocket;
    if (!socket.authorized) return undefined;
    const commonName = socket.getPeerCertificate().subject?.CN;
    const names = this.options.allowedNames;
    if (names.length > 0 && !names.includes(String(commonName))) return undefined;
    const user = request.headers["x-remote-user"];
    if (typeof user !== "string" || !user) return undefined;
    const groupHeader = request.headers["x-remote-group"];
    const groups = (Array.isArray(groupHeader) ? groupHeader : groupHeader ? [groupHeader] : []).flatMap(
      (g) => g.split(","),
    );
    const extra: Record<string, string[]> = {};
    for (const [header, value] of Object.entries(request.headers))
      if (header.startsWith(EXTRA_HEADER) && value !== undefined)
        extra[decodeURIComponent(header.slice(EXTRA_HEADER.length))] = Array.isArray(value) ? value : [value];
    return { user, groups, extra };
  }

  private allowed(requester: Requester, verb: string, namespace: string, name: string, subresource: string) {
    return isAllowed(this.options.client, {
      user: requester.user,
      groups: requester.groups,
      verb,
      group: SUBRESOURCE_GROUP,
      resource: "virtualmachines",
      subresource,
      namespace,
      name,
    });
  }

  private async serve(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = new URL(request.url ?? "/", "https://localhost").pathname;
    if (path === "/healthz" || path === "/readyz") return void response.writeHead(200).end("ok");
    const requester = this.requester(request);
    if (!requester)
      return status(response, 401, "Unauthorized", "only the Kubernetes API server's front proxy may call");
    if (path === PREFIX && request.method === "GET") return json(response, 200, discovery());
    if (path === `/apis/${SUBRESOURCE_GROUP}` && request.method === "GET")
      return json(response, 200, group());
    const match = ROUTE.exec(path);
    if (!match) return status(response, 404, "NotFound", `no such path ${path}`);
    const [, namespace = "", name = "", action = ""] = match;
    if (action === "console")
      return status(response, 400, "BadRequest", "console is a WebSocket: send an Upgrade request");
    if (action === "userdata")
      return request.method === "GET"
        ? this.userData(requester, namespace, name, response)
        : status(response, 405, "MethodNotAllowed", "userdata takes GET");
    if (request.method !== "PUT") return status(response, 405, "MethodNotAllowed", `${action} takes PUT`);
    if (!(await this.allowed(requester, "update", namespace, name, action)))
      return status(
        response,
        403,
        "Forbidden",
        `User "${requester.user}" cannot update virtualmachines/${action} in namespace "${namespace}"`,
      );
    const patch =
      action === "restart"
        ? { metadata: { annotations: { [RESTART_ANNOTATION]: new Date().toISOString() } } }
        : { spec: { runStrategy: action === "start" ? "Always" : "Halted" } };
    try {
      await this.options.client.mergePatch(Resources.virtualMachines, name, namespace, patch);
    } catch (error) {
      if (isNotFound(error)) return status(response, 404, "NotFound", `virtualmachines "${name}" not found`);
      throw error;
    }
    this.options.logger.info(
      { user: requester.user, namespace, name, action: action as (typeof ACTIONS)[number] },
      "subresource",
    );
    response.writeHead(202).end();
  }

  /**
   * The VM's guest secrets, its user data and its password: for the agent of the VM's host only
   * (its token's node is the VM's status.host) or of the host it is moving to live (it builds the
   * guest's config drive there), or for whoever may read every Secret holding them; never for
   * another host's agent.
   */
  /** Whether a live migration of the VM to `host` is under way (its target prepares the guest's drive). */
  private async isMovingTo(vm: VirtualMachine, host: string): Promise<boolean> {
    const migrations = await this.options.client.list<VirtualMachineMigration>(
      Resources.virtualMachineMigrations,
      { namespace: vm.metadata.namespace as string },
    );
    return migrations.items.some(
      (m) =>
        m.spec.vm === vm.metadata.name &&
        m.status?.targetHost === host &&
        !isFinalMigrationPhase(m.status.phase) &&
        !m.metadata.deletionTimestamp,
    );
  }

  private async userData(requester: Requester, namespace: string, name: string, response: ServerResponse) {
    const { client } = this.options;
    const vm = await unlessGone(client.get<VirtualMachine>(Resources.virtualMachines, name, namespace));
    if (!vm) return status(response, 404, "NotFound", `virtualmachines "${name}" not found`);
    const secrets = [
      { secret: vm.spec.userDataSecret, key: USER_DATA_KEY, field: "userData" },
      { secret: vm.spec.passwordSecret, key: VM_PASSWORD_KEY, field: "password" },
    ].filter((s): s is { secret: string; key: string; field: string } => s.secret !== undefined);
    const node =
      requester.user === HOST_AGENT_USER ? (requester.extra[NODE_NAME_EXTRA]?.[0] ?? "") : undefined;
    const mayRead =
      node !== undefined
        ? node !== "" && (node === vm.status?.host || (await this.isMovingTo(vm, node)))
        : secrets.length > 0 &&
          (
            await Promise.all(
              secrets.map(({ secret }) =>
                isAllowed(client, {
                  user: requester.user,
                  groups: requester.groups,
                  verb: "get",
                  group: "",
                  resource: "secrets",
                  namespace,
                  name: secret,
                }),
              ),
            )
          ).every(Boolean);
    if (!mayRead)
      return status(
        response,
        403,
        "Forbidden",
        `User "${requester.user}" may not read the user data of VM ${namespace}/${name}: only the agent of its host${vm.status?.host ? ` (${vm.status.host})` : ""} may`,
      );
    const found: Record<string, string> = {};
    for (const { secret, key, field } of secrets) {
      const value = (await unlessGone(client.get<Secret>(SECRET, secret, namespace)))?.data?.[key];
      if (value) found[field] = value;
    }
    this.options.logger.info({ user: requester.user, namespace, name }, "user data read");
    // Both base64, as in their Secrets.
    return json(response, 200, {
      kind: "VirtualMachineUserData",
      apiVersion: `${SUBRESOURCE_GROUP}/${SUBRESOURCE_VERSION}`,
      ...found,
    });
  }

  private async console(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const refuse = (code: number, text: string): void => {
      socket.end(`HTTP/1.1 ${code} ${text}\r\nContent-Length: 0\r\n\r\n`);
    };
    const requester = this.requester(request);
    if (!requester) return refuse(401, "Unauthorized");
    const match = ROUTE.exec(new URL(request.url ?? "/", "https://localhost").pathname);
    if (match?.[3] !== "console") return refuse(404, "Not Found");
    const [, namespace = "", name = ""] = match;
    if (!(await this.allowed(requester, "get", namespace, name, "console"))) return refuse(403, "Forbidden");
    const vm = await this.options.client
      .get<VirtualMachine>(Resources.virtualMachines, name, namespace)
      .catch(() => undefined);
    if (!vm?.status?.host || displayState(vm) !== "Running") return refuse(409, "Conflict");
    const host = await this.options.client.get<Host>(Resources.hosts, vm.status.host).catch(() => undefined);
    const endpoint = host?.status?.consoleEndpoint;
    const certificate = host?.status?.consoleCertificate;
    if (!endpoint || !certificate || !this.options.consoleKey) return refuse(503, "Service Unavailable");
    const ticket = issueConsoleTicket(this.options.consoleKey, {
      host: vm.status.host,
      vm: vm.metadata.uid as string,
    });
    // The host's own certificate, from its status, is the only one trusted; the name in it is not
    // checked (an address or a pod IP), the exact certificate is.
    const upstream = new WebSocket(`wss://${endpoint}/console/${vm.metadata.uid}`, {
      headers: { authorization: `Bearer ${ticket}` },
      ca: certificate,
      // Node's TLS takes undefined for "matches" (ws's types say boolean).
      checkServerIdentity: (() => undefined) as unknown as ClientOptions["checkServerIdentity"],
      maxPayload: CONSOLE_MAX_MESSAGE_BYTES,
    });
    upstream.once("error", () => refuse(502, "Bad Gateway"));
    upstream.once("open", () => {
      this.sockets.handleUpgrade(request, socket, head, (client) => {
        // Streams keep backpressure both ways: a slow user holds the guest's output at the host.
        const toHost = createWebSocketStream(upstream);
        pipeline(toHost, createWebSocketStream(client), toHost, () => {
          upstream.terminate();
          client.terminate();
        });
        this.options.logger.info({ user: requester.user, namespace, name }, "console opened");
      });
    });
  }
}

function json(response: ServerResponse, code: number, body: unknown): void {
  response.writeHead(code, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** A Kubernetes Status, which kubectl prints as the error. */
function status(response: ServerResponse, code: number, reason: string, message: string): void {
  json(response, code, { kind: "Status", apiVersion: "v1", status: "Failure", code, reason, message });
}

function discovery() {
  return {
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion: `${SUBRESOURCE_GROUP}/${SUBRESOURCE_VERSION}`,
    resources: [
      ...ACTIONS.map((action) => ({
        name: `virtualmachines/${action}`,
        singularName: "",
        namespaced: true,
        kind: "VirtualMachine",
        verbs: ["update"],
      })),
      ...["console", "userdata"].map((subresource) => ({
        name: `virtualmachines/${subresource}`,
        singularName: "",
        namespaced: true,
        kind: "VirtualMachine",
        verbs: ["get"],
      })),
    ],
  };
}

function group() {
  const version = {
    groupVersion: `${SUBRESOURCE_GROUP}/${SUBRESOURCE_VERSION}`,
    version: SUBRESOURCE_VERSION,
  };
  return {
    kind: "APIGroup",
    apiVersion: "v1",
    name: SUBRESOURCE_GROUP,
    versions: [version],
    preferredVersion: version,
  };
}
