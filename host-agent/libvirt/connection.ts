// A typed binding of the libvirt C API over koffi: only the calls Stratus needs. Calls that may
// block run on koffi's worker threads; calls on one connection are serialised, so the
// connection's last error (read with virConnGetLastError, not thread-local) belongs to the call
// that just failed and becomes a LibvirtError carrying libvirt's own message.
import koffi from "koffi";
import { escapeXml } from "../xml.ts";

const lib = koffi.load("libvirt.so.0");

const VirError = koffi.struct("virError", {
  code: "int",
  domain: "int",
  message: "char *",
  level: "int",
  conn: "void *",
  dom: "void *",
  str1: "char *",
  str2: "char *",
  str3: "char *",
  int1: "int",
  int2: "int",
  net: "void *",
});
// Registered by name for the function declarations below.
koffi.struct("virNodeInfo", {
  model: koffi.array("char", 32),
  memory: "unsigned long",
  cpus: "unsigned int",
  mhz: "unsigned int",
  nodes: "unsigned int",
  sockets: "unsigned int",
  cores: "unsigned int",
  threads: "unsigned int",
});
// Registered by name for the function declarations below.
koffi.struct("virStoragePoolInfo", {
  state: "int",
  capacity: "unsigned long long",
  allocation: "unsigned long long",
  available: "unsigned long long",
});
// Registered by name for the function declarations below.
koffi.struct("virStorageVolInfo", {
  type: "int",
  capacity: "unsigned long long",
  allocation: "unsigned long long",
});
koffi.struct("virDomainBlockInfo", {
  capacity: "unsigned long long",
  allocation: "unsigned long long",
  physical: "unsigned long long",
});
const ErrorFunc = koffi.proto("void virErrorFunc(void *userData, void *error)");
const EventTimeoutCallback = koffi.proto("void virEventTimeoutCallback(int timer, void *opaque)");
const DomainEventCallback = koffi.proto(
  "int virConnectDomainEventCallback(void *conn, void *dom, int event, int detail, void *opaque)",
);

const api = {
  setErrorFunc: lib.func("void virSetErrorFunc(void *userData, virErrorFunc *handler)"),
  eventRegisterDefaultImpl: lib.func("int virEventRegisterDefaultImpl()"),
  eventRunDefaultImpl: lib.func("int virEventRunDefaultImpl()"),
  eventAddTimeout: lib.func(
    "int virEventAddTimeout(int frequency, virEventTimeoutCallback *cb, void *opaque, void *ff)",
  ),
  eventRemoveTimeout: lib.func("int virEventRemoveTimeout(int timer)"),
  connectOpen: lib.func("void *virConnectOpen(const char *name)"),
  connectClose: lib.func("int virConnectClose(void *conn)"),
  connectIsAlive: lib.func("int virConnectIsAlive(void *conn)"),
  connGetLastError: lib.func("virError *virConnGetLastError(void *conn)"),
  getLastErrorMessage: lib.func("const char *virGetLastErrorMessage()"),
  connectGetLibVersion: lib.func("int virConnectGetLibVersion(void *conn, _Out_ unsigned long *version)"),
  connectGetVersion: lib.func("int virConnectGetVersion(void *conn, _Out_ unsigned long *version)"),
  connectGetType: lib.func("const char *virConnectGetType(void *conn)"),
  connectGetDomainCapabilities: lib.func(
    "void *virConnectGetDomainCapabilities(void *conn, const char *emulatorbin, const char *arch, const char *machine, const char *virttype, unsigned int flags)",
  ),
  nodeGetInfo: lib.func("int virNodeGetInfo(void *conn, _Out_ virNodeInfo *info)"),
  connectListAllDomains: lib.func(
    "int virConnectListAllDomains(void *conn, _Out_ void **domains, unsigned int flags)",
  ),
  domainDefineXML: lib.func("void *virDomainDefineXML(void *conn, const char *xml)"),
  domainLookupByName: lib.func("void *virDomainLookupByName(void *conn, const char *name)"),
  domainCreate: lib.func("int virDomainCreate(void *dom)"),
  domainShutdown: lib.func("int virDomainShutdown(void *dom)"),
  domainSuspend: lib.func("int virDomainSuspend(void *dom)"),
  domainResume: lib.func("int virDomainResume(void *dom)"),
  domainDestroy: lib.func("int virDomainDestroy(void *dom)"),
  domainUndefine: lib.func("int virDomainUndefine(void *dom)"),
  domainFree: lib.func("int virDomainFree(void *dom)"),
  domainGetName: lib.func("const char *virDomainGetName(void *dom)"),
  domainGetUUIDString: lib.func("int virDomainGetUUIDString(void *dom, _Out_ char *buf)"),
  domainGetState: lib.func(
    "int virDomainGetState(void *dom, _Out_ int *state, _Out_ int *reason, unsigned int flags)",
  ),
  domainGetXMLDesc: lib.func("void *virDomainGetXMLDesc(void *dom, unsigned int flags)"),
  domainAttachDeviceFlags: lib.func(
    "int virDomainAttachDeviceFlags(void *dom, const char *xml, unsigned int flags)",
  ),
  domainDetachDeviceFlags: lib.func(
    "int virDomainDetachDeviceFlags(void *dom, const char *xml, unsigned int flags)",
  ),
  domainUpdateDeviceFlags: lib.func(
    "int virDomainUpdateDeviceFlags(void *dom, const char *xml, unsigned int flags)",
  ),
  domainGetBlockInfo: lib.func(
    "int virDomainGetBlockInfo(void *dom, const char *disk, _Out_ virDomainBlockInfo *info, unsigned int flags)",
  ),
  domainBlockResize: lib.func(
    "int virDomainBlockResize(void *dom, const char *disk, unsigned long long size, unsigned int flags)",
  ),
  storagePoolLookupByName: lib.func("void *virStoragePoolLookupByName(void *conn, const char *name)"),
  storagePoolDefineXML: lib.func(
    "void *virStoragePoolDefineXML(void *conn, const char *xml, unsigned int flags)",
  ),
  storagePoolBuild: lib.func("int virStoragePoolBuild(void *pool, unsigned int flags)"),
  storagePoolCreate: lib.func("int virStoragePoolCreate(void *pool, unsigned int flags)"),
  storagePoolIsActive: lib.func("int virStoragePoolIsActive(void *pool)"),
  storagePoolRefresh: lib.func("int virStoragePoolRefresh(void *pool, unsigned int flags)"),
  storagePoolGetInfo: lib.func("int virStoragePoolGetInfo(void *pool, _Out_ virStoragePoolInfo *info)"),
  storagePoolFree: lib.func("int virStoragePoolFree(void *pool)"),
  storagePoolGetXMLDesc: lib.func("void *virStoragePoolGetXMLDesc(void *pool, unsigned int flags)"),
  storagePoolDestroy: lib.func("int virStoragePoolDestroy(void *pool)"),
  storagePoolUndefine: lib.func("int virStoragePoolUndefine(void *pool)"),
  storageVolLookupByName: lib.func("void *virStorageVolLookupByName(void *pool, const char *name)"),
  storageVolCreateXML: lib.func(
    "void *virStorageVolCreateXML(void *pool, const char *xml, unsigned int flags)",
  ),
  storageVolGetPath: lib.func("void *virStorageVolGetPath(void *vol)"),
  storageVolGetInfo: lib.func("int virStorageVolGetInfo(void *vol, _Out_ virStorageVolInfo *info)"),
  storageVolDelete: lib.func("int virStorageVolDelete(void *vol, unsigned int flags)"),
  storageVolResize: lib.func(
    "int virStorageVolResize(void *vol, unsigned long long capacity, unsigned int flags)",
  ),
  storageVolFree: lib.func("int virStorageVolFree(void *vol)"),
  networkLookupByName: lib.func("void *virNetworkLookupByName(void *conn, const char *name)"),
  networkDefineXML: lib.func("void *virNetworkDefineXML(void *conn, const char *xml)"),
  networkCreate: lib.func("int virNetworkCreate(void *net)"),
  networkIsActive: lib.func("int virNetworkIsActive(void *net)"),
  networkDestroy: lib.func("int virNetworkDestroy(void *net)"),
  networkUndefine: lib.func("int virNetworkUndefine(void *net)"),
  networkFree: lib.func("int virNetworkFree(void *net)"),
  networkGetName: lib.func("const char *virNetworkGetName(void *net)"),
  networkGetXMLDesc: lib.func("void *virNetworkGetXMLDesc(void *net, unsigned int flags)"),
  networkUpdate: lib.func(
    "int virNetworkUpdate(void *net, unsigned int command, unsigned int section, int parentIndex, const char *xml, unsigned int flags)",
  ),
  connectListAllNetworks: lib.func(
    "int virConnectListAllNetworks(void *conn, _Out_ void **nets, unsigned int flags)",
  ),
  domainEventRegisterAny: lib.func(
    "int virConnectDomainEventRegisterAny(void *conn, void *dom, int eventID, virConnectDomainEventCallback *cb, void *opaque, void *freecb)",
  ),
  domainEventDeregisterAny: lib.func("int virConnectDomainEventDeregisterAny(void *conn, int callbackID)"),
};
const libc = koffi.load("libc.so.6");
const free = libc.func("void free(void *ptr)");

export type Pointer = unknown;

/** libvirt's domain states (virDomainState). */
export const DOMAIN_STATES = [
  "nostate",
  "running",
  "blocked",
  "paused",
  "shutdown",
  "shutoff",
  "crashed",
  "pmsuspended",
] as const;
export type DomainState = (typeof DOMAIN_STATES)[number];

/** Why a domain is shut off (virDomainShutoffReason): "shutdown" is the guest powering itself off. */
export const SHUTOFF_REASONS = [
  "unknown",
  "shutdown",
  "destroyed",
  "crashed",
  "migrated",
  "saved",
  "failed",
  "from-snapshot",
  "daemon",
] as const;
export type ShutoffReason = (typeof SHUTOFF_REASONS)[number];

/** libvirt's lifecycle events (virDomainEventType). */
export const DOMAIN_EVENTS = [
  "defined",
  "undefined",
  "started",
  "suspended",
  "resumed",
  "stopped",
  "shutdown",
  "pmsuspended",
  "crashed",
] as const;

export const VIR_ERR_NO_SUPPORT = 3;
/** virDomainFree, for handles sibling modules receive (a migrated domain on its target). */
export const freeDomain = (dom: Pointer) => api.domainFree(dom);
export const VIR_ERR_NO_DOMAIN = 42;
export const VIR_ERR_NO_STORAGE_POOL = 49;
export const VIR_ERR_NO_STORAGE_VOL = 50;
export const VIR_ERR_NO_NETWORK = 43;

// virNetworkUpdate: commands, sections and flags (live and persistent config).
const NETWORK_UPDATE_DELETE = 2;
const NETWORK_UPDATE_ADD_LAST = 3;
const NETWORK_SECTION_IP_DHCP_HOST = 4;
const NETWORK_UPDATE_LIVE_AND_CONFIG = 1 | 2;
export const VIR_ERR_OPERATION_INVALID = 55;

// virDomainModificationImpact: the persistent definition, plus the running guest when live.
const AFFECT_LIVE = 1;
const AFFECT_CONFIG = 2;
const affect = (live: boolean) => AFFECT_CONFIG | (live ? AFFECT_LIVE : 0);
const BLOCK_RESIZE_BYTES = 1;

/** virConnectOpen's reason is thread-local to the worker that ran it, so it cannot be read back. */
const DAEMON_UNREACHABLE = "the libvirt daemon does not answer (is libvirtd running?)";

export class LibvirtError extends Error {
  override name = "LibvirtError";
  readonly code: number;
  constructor(operation: string, message: string, code: number) {
    super(`libvirt ${operation}: ${message}`);
    this.code = code;
  }
}

export interface DomainInfo {
  name: string;
  uuid: string;
  state: DomainState;
  /** Set when the domain is shut off. */
  shutoffReason?: ShutoffReason;
}

export interface PoolInfo {
  capacityBytes: bigint;
  allocationBytes: bigint;
  availableBytes: bigint;
}

export interface VolumeInfo {
  name: string;
  path: string;
  capacityBytes: bigint;
}

export interface NodeInfo {
  model: string;
  memoryBytes: number;
  cpus: number;
  mhz: number;
}

let eventLoop: { timer: number; stopped: boolean; iteration: Promise<void> } | undefined;
const tick = koffi.register(() => {}, koffi.pointer(EventTimeoutCallback));
const errorHandler = koffi.register(() => {}, koffi.pointer(ErrorFunc));
// libvirt prints every error to stderr unless an error function is set; errors are raised as
// exceptions here instead.
api.setErrorFunc(null, errorHandler);

/**
 * Runs libvirt's default event loop on a koffi worker thread, forever. It must be registered
 * before the first connection opens for that connection to deliver events.
 */
function startEventLoop(): void {
  if (eventLoop) return;
  if (api.eventRegisterDefaultImpl() < 0)
    throw new LibvirtError("virEventRegisterDefaultImpl", "cannot set up libvirt's event loop", 0);
  // A 1 s tick bounds every iteration, so stopping never waits for an event that does not come.
  const timer = api.eventAddTimeout(1000, tick, null, null) as number;
  const loop = { timer, stopped: false, iteration: Promise.resolve() };
  const iterate = () => {
    loop.iteration = new Promise<void>((resolve) => {
      api.eventRunDefaultImpl.async((error: unknown) => {
        resolve();
        if (!error && !loop.stopped) iterate();
      });
    });
  };
  iterate();
  eventLoop = loop;
}

/**
 * Stops libvirt's event loop and waits until its worker thread is free. Call it before
 * process.exit: a thread blocked in the loop, or in a JavaScript callback the exiting main thread
 * will never run, keeps the process from exiting.
 */
export async function stopEventLoop(): Promise<void> {
  if (!eventLoop || eventLoop.stopped) return;
  eventLoop.stopped = true;
  api.eventRemoveTimeout(eventLoop.timer); // wakes the loop's poll
  await eventLoop.iteration;
}

function call<T>(fn: { async: (...args: unknown[]) => void }, ...args: unknown[]): Promise<T> {
  return new Promise((resolve, reject) => {
    fn.async(...args, (error: unknown, result: T) => (error ? reject(error) : resolve(result)));
  });
}

export class LibvirtConnection {
  readonly uri: string;
  /** Replaced when the daemon went away and came back (see ensureConnected). */
  private conn: Pointer;
  private readonly listeners: ((
    name: string,
    event: (typeof DOMAIN_EVENTS)[number] | "unknown",
    detail: number,
  ) => void)[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  private readonly callbacks: { id: number; pointer: unknown }[] = [];
  private closed = false;

  private constructor(uri: string, conn: Pointer) {
    this.uri = uri;
    this.conn = conn;
  }

  static async open(uri: string): Promise<LibvirtConnection> {
    startEventLoop();
    const conn = await call<Pointer>(api.connectOpen, uri);
    if (!conn) throw new LibvirtError(`open ${uri}`, DAEMON_UNREACHABLE, 0);
    return new LibvirtConnection(uri, conn);
  }

  /**
   * Reconnects when the daemon closed the connection (restarted, or was down). The old connection
   * object is deliberately not freed: a call already holding its pointer must fail, not crash.
   */
  async ensureConnected(): Promise<void> {
    if (this.closed || this.isAlive()) return;
    const fresh = await call<Pointer>(api.connectOpen, this.uri);
    if (!fresh) throw new LibvirtError(`connect to ${this.uri}`, DAEMON_UNREACHABLE, 0);
    this.conn = fresh;
    this.callbacks.length = 0;
    for (const listener of this.listeners) await this.registerDomainEvents(listener);
  }

  /** Whether the daemon still holds this connection (libvirt's event loop notices it closing). */
  isAlive(): boolean {
    return !this.closed && api.connectIsAlive(this.conn) === 1;
  }

  /** Runs one libvirt call after the previous one, turning failures into LibvirtError. */
  private serial<T>(operation: string, work: () => Promise<T>, failed: (result: T) => boolean): Promise<T> {
    const next = this.queue.then(async () => {
      if (this.closed) throw new LibvirtError(operation, "the connection is closed", 0);
      const result = await work();
      if (failed(result)) throw this.lastError(operation);
      return result;
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  private lastError(operation: string): LibvirtError {
    const pointer = api.connGetLastError(this.conn);
    if (!pointer) return new LibvirtError(operation, "failed (libvirt gave no reason)", 0);
    const error = koffi.decode(pointer, VirError) as { code: number; message: string | null };
    return new LibvirtError(operation, error.message ?? "failed", error.code);
  }

  private intCall(
    operation: string,
    fn: { async: (...args: unknown[]) => void },
    ...args: unknown[]
  ): Promise<number> {
    return this.serial(
      operation,
      () => call<number>(fn, ...args),
      (result) => result < 0,
    );
  }

  /** Looks the domain up, runs `work` with its handle, and frees the handle. */
  private async withDomain<T>(name: string, work: (dom: Pointer) => Promise<T>): Promise<T> {
    const dom = await this.serial(
      `lookup domain ${name}`,
      () => call<Pointer>(api.domainLookupByName, this.conn, name),
      (d) => !d,
    );
    try {
      return await work(dom);
    } finally {
      api.domainFree(dom);
    }
  }

  async nodeInfo(): Promise<NodeInfo> {
    const info: Record<string, unknown> = {};
    await this.intCall("node info", api.nodeGetInfo, this.conn, info);
    return {
      model: String(info.model ?? ""),
      memoryBytes: Number(info.memory) * 1024,
      cpus: Number(info.cpus),
      mhz: Number(info.mhz),
    };
  }

  async versions(): Promise<{ type: string; hypervisor: string; libvirt: string }> {
    const lib = [0];
    const hypervisor = [0];
    await this.intCall("library version", api.connectGetLibVersion, this.conn, lib);
    await this.intCall("hypervisor version", api.connectGetVersion, this.conn, hypervisor);
    const type = await this.serial(
      "hypervisor type",
      () => call<string | null>(api.connectGetType, this.conn),
      (t) => !t,
    );
    return {
      type: type as string,
      hypervisor: formatVersion(Number(hypervisor[0])),
      libvirt: formatVersion(Number(lib[0])),
    };
  }

  /** What libvirt can give x86_64 guests of a domain type (kvm, qemu), or a LibvirtError when nothing. */
  domainCapabilities(virtType: string): Promise<string> {
    return this.heapString(`domain capabilities for ${virtType}`, () =>
      call<Pointer>(api.connectGetDomainCapabilities, this.conn, null, "x86_64", null, virtType, 0),
    );
  }

  async listDomains(): Promise<DomainInfo[]> {
    const out: [Pointer] = [null];
    const count = await this.intCall("list domains", api.connectListAllDomains, this.conn, out, 0);
    if (count === 0 || !out[0]) return [];
    const handles = koffi.decode(out[0], koffi.array("void *", count)) as Pointer[];
    try {
      const domains: DomainInfo[] = [];
      for (const dom of handles) domains.push(await this.describe(dom));
      return domains;
    } finally {
      for (const dom of handles) api.domainFree(dom);
      free(out[0]);
    }
  }

  /** The domain's name, UUID and state, or undefined if there is no such domain. */
  async domain(name: string): Promise<DomainInfo | undefined> {
    try {
      return await this.withDomain(name, (dom) => this.describe(dom));
    } catch (error) {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_DOMAIN) return undefined;
      throw error;
    }
  }

  /** Calls a libvirt function that returns a string the caller must free, and frees it. */
  private async heapString(operation: string, produce: () => Promise<Pointer>): Promise<string> {
    const pointer = await this.serial(operation, produce, (p) => !p);
    try {
      return koffi.decode(pointer, "char", -1) as string;
    } finally {
      free(pointer);
    }
  }

  domainXml(name: string): Promise<string> {
    return this.withDomain(name, (dom) =>
      this.heapString(`XML of ${name}`, () => call<Pointer>(api.domainGetXMLDesc, dom, 0)),
    );
  }

  /** Defines (or redefines) a persistent domain from XML. */
  async defineDomain(xml: string): Promise<DomainInfo> {
    const dom = await this.serial(
      "define domain",
      () => call<Pointer>(api.domainDefineXML, this.conn, xml),
      (d) => !d,
    );
    try {
      return await this.describe(dom);
    } finally {
      api.domainFree(dom);
    }
  }

  startDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`start ${name}`, api.domainCreate, dom));
  }

  /** Asks the guest to shut down (ACPI); it may take a while, or never happen. */
  shutdownDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`shut down ${name}`, api.domainShutdown, dom));
  }

  /** Pauses the guest's CPUs; QEMU flushes its disks first, so the files are consistent while paused. */
  suspendDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`pause ${name}`, api.domainSuspend, dom));
  }

  resumeDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`resume ${name}`, api.domainResume, dom));
  }

  /** Pulls the plug. */
  destroyDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`destroy ${name}`, api.domainDestroy, dom));
  }

  /** Adds a device to the domain's definition, and to the running guest when `live` (hot plug). */
  attachDevice(name: string, xml: string, live: boolean): Promise<number> {
    return this.withDomain(name, (dom) =>
      this.intCall(`attach a device to ${name}`, api.domainAttachDeviceFlags, dom, xml, affect(live)),
    );
  }

  /** Removes a device from the domain's definition, and from the running guest when `live`. */
  detachDevice(name: string, xml: string, live: boolean): Promise<number> {
    return this.withDomain(name, (dom) =>
      this.intCall(`detach a device from ${name}`, api.domainDetachDeviceFlags, dom, xml, affect(live)),
    );
  }

  /** Changes a device in place (a CD-ROM's disc), in the definition and, when `live`, the running guest. */
  updateDevice(name: string, xml: string, live: boolean): Promise<number> {
    return this.withDomain(name, (dom) =>
      this.intCall(`update a device of ${name}`, api.domainUpdateDeviceFlags, dom, xml, affect(live)),
    );
  }

  /** The size of disk `target` (e.g. vdb) as the domain sees it. */
  blockCapacity(name: string, target: string): Promise<bigint> {
    return this.withDomain(name, async (dom) => {
      const info: Record<string, unknown> = {};
      await this.intCall(`block info ${target} of ${name}`, api.domainGetBlockInfo, dom, target, info, 0);
      return BigInt(info.capacity as number);
    });
  }

  /** Grows disk `target` of a running domain to `bytes`; QEMU grows the image and tells the guest. */
  resizeBlockDevice(name: string, target: string, bytes: bigint): Promise<number> {
    return this.withDomain(name, (dom) =>
      this.intCall(
        `resize ${target} of ${name}`,
        api.domainBlockResize,
        dom,
        target,
        bytes,
        BLOCK_RESIZE_BYTES,
      ),
    );
  }

  undefineDomain(name: string): Promise<number> {
    return this.withDomain(name, (dom) => this.intCall(`undefine ${name}`, api.domainUndefine, dom));
  }

  /** Looks a handle up, runs `work` with it and frees it; a missing object is `notFound`'s error code. */
  private async withHandle<T>(
    what: string,
    lookup: () => Promise<Pointer>,
    release: (handle: Pointer) => unknown,
    work: (handle: Pointer) => Promise<T>,
  ): Promise<T> {
    const handle = await this.serial(`lookup ${what}`, lookup, (h) => !h);
    try {
      return await work(handle);
    } finally {
      release(handle);
    }
  }

  private withPool<T>(name: string, work: (pool: Pointer) => Promise<T>): Promise<T> {
    return this.withHandle(
      `pool ${name}`,
      () => call<Pointer>(api.storagePoolLookupByName, this.conn, name),
      api.storagePoolFree,
      work,
    );
  }

  /** Makes sure a pool exists and is active (defined from `xml` when missing, built, started). */
  async ensurePool(name: string, xml: string): Promise<PoolInfo> {
    try {
      await this.withPool(name, async () => undefined);
    } catch (error) {
      if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_STORAGE_POOL)) throw error;
      const pool = await this.serial(
        `define pool ${name}`,
        () => call<Pointer>(api.storagePoolDefineXML, this.conn, xml, 0),
        (p) => !p,
      );
      api.storagePoolFree(pool);
    }
    await this.withPool(name, async (pool) => {
      if ((await call<number>(api.storagePoolIsActive, pool)) === 1) return;
      await this.intCall(`build pool ${name}`, api.storagePoolBuild, pool, 0).catch((error: unknown) => {
        if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_SUPPORT)) throw error;
      });
      await this.intCall(`start pool ${name}`, api.storagePoolCreate, pool, 0);
    });
    return this.poolInfo(name);
  }

  /** The pool's XML as libvirt keeps it. */
  poolXml(name: string): Promise<string> {
    return this.withPool(name, (pool) =>
      this.heapString(`XML of pool ${name}`, () => call<Pointer>(api.storagePoolGetXMLDesc, pool, 0)),
    );
  }

  /** Stops and undefines a pool; its directory and the files in it stay. */
  async deletePool(name: string): Promise<void> {
    try {
      await this.withPool(name, async (pool) => {
        if ((await call<number>(api.storagePoolIsActive, pool)) === 1)
          await this.intCall(`stop pool ${name}`, api.storagePoolDestroy, pool);
        await this.intCall(`undefine pool ${name}`, api.storagePoolUndefine, pool);
      });
    } catch (error) {
      if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_STORAGE_POOL)) throw error;
    }
  }

  poolInfo(name: string): Promise<PoolInfo> {
    return this.withPool(name, async (pool) => {
      await this.intCall(`refresh pool ${name}`, api.storagePoolRefresh, pool, 0);
      const info: Record<string, unknown> = {};
      await this.intCall(`pool info ${name}`, api.storagePoolGetInfo, pool, info);
      return {
        capacityBytes: BigInt(info.capacity as number),
        allocationBytes: BigInt(info.allocation as number),
        availableBytes: BigInt(info.available as number),
      };
    });
  }

  private withVolume<T>(pool: string, name: string, work: (vol: Pointer) => Promise<T>): Promise<T> {
    return this.withPool(pool, (poolHandle) =>
      this.withHandle(
        `volume ${pool}/${name}`,
        () => call<Pointer>(api.storageVolLookupByName, poolHandle, name),
        api.storageVolFree,
        work,
      ),
    );
  }

  /** The volume, or undefined when the pool has no volume of that name. */
  async volume(pool: string, name: string): Promise<VolumeInfo | undefined> {
    try {
      return await this.withVolume(pool, name, (vol) => this.describeVolume(name, vol));
    } catch (error) {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_STORAGE_VOL) return undefined;
      throw error;
    }
  }

  /** Creates a qcow2 volume, blank or as a copy-on-write overlay of `backingPath`. */
  async createVolume(
    pool: string,
    spec: { name: string; capacityBytes: bigint; backingPath?: string; backingFormat?: "qcow2" | "raw" },
  ): Promise<VolumeInfo> {
    const xml = [
      "<volume>",
      `<name>${escapeXml(spec.name)}</name>`,
      `<capacity unit='bytes'>${spec.capacityBytes}</capacity>`,
      "<target><format type='qcow2'/></target>",
      ...(spec.backingPath
        ? [
            `<backingStore><path>${escapeXml(spec.backingPath)}</path><format type='${spec.backingFormat ?? "qcow2"}'/></backingStore>`,
          ]
        : []),
      "</volume>",
    ].join("");
    return this.withPool(pool, async (poolHandle) => {
      const vol = await this.serial(
        `create volume ${pool}/${spec.name}`,
        () => call<Pointer>(api.storageVolCreateXML, poolHandle, xml, 0),
        (v) => !v,
      );
      try {
        return await this.describeVolume(spec.name, vol);
      } finally {
        api.storageVolFree(vol);
      }
    });
  }

  /** Grows a volume to `capacityBytes` (libvirt refuses to shrink one). */
  async resizeVolume(pool: string, name: string, capacityBytes: bigint): Promise<VolumeInfo> {
    return this.withVolume(pool, name, async (vol) => {
      await this.intCall(`resize volume ${pool}/${name}`, api.storageVolResize, vol, capacityBytes, 0);
      return this.describeVolume(name, vol);
    });
  }

  async deleteVolume(pool: string, name: string): Promise<void> {
    try {
      await this.withVolume(pool, name, (vol) =>
        this.intCall(`delete volume ${pool}/${name}`, api.storageVolDelete, vol, 0),
      );
    } catch (error) {
      if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_STORAGE_VOL)) throw error;
    }
  }

  private async describeVolume(name: string, vol: Pointer): Promise<VolumeInfo> {
    const info: Record<string, unknown> = {};
    await this.intCall(`volume info ${name}`, api.storageVolGetInfo, vol, info);
    const path = await this.heapString(`volume path ${name}`, () =>
      call<Pointer>(api.storageVolGetPath, vol),
    );
    return { name, path, capacityBytes: BigInt(info.capacity as number) };
  }

  private withNetwork<T>(name: string, work: (net: Pointer) => Promise<T>): Promise<T> {
    return this.withHandle(
      `network ${name}`,
      () => call<Pointer>(api.networkLookupByName, this.conn, name),
      api.networkFree,
      work,
    );
  }

  /** The network's XML, or undefined when there is no such network. */
  async networkXml(name: string): Promise<string | undefined> {
    try {
      return await this.withNetwork(name, (net) =>
        this.heapString(`XML of network ${name}`, () => call<Pointer>(api.networkGetXMLDesc, net, 0)),
      );
    } catch (error) {
      if (error instanceof LibvirtError && error.code === VIR_ERR_NO_NETWORK) return undefined;
      throw error;
    }
  }

  /** Defines the network if it does not exist and makes sure it is active. */
  async ensureNetwork(name: string, xml: string): Promise<void> {
    if ((await this.networkXml(name)) === undefined) {
      const net = await this.serial(
        `define network ${name}`,
        () => call<Pointer>(api.networkDefineXML, this.conn, xml),
        (n) => !n,
      );
      api.networkFree(net);
    }
    await this.withNetwork(name, async (net) => {
      if ((await call<number>(api.networkIsActive, net)) !== 1)
        await this.intCall(`start network ${name}`, api.networkCreate, net);
    });
  }

  /** Adds or removes one DHCP host entry (`<host mac=... ip=.../>`), live and in the saved config. */
  updateDhcpHost(network: string, action: "add" | "delete", hostXml: string): Promise<number> {
    const command = action === "add" ? NETWORK_UPDATE_ADD_LAST : NETWORK_UPDATE_DELETE;
    return this.withNetwork(network, (net) =>
      this.intCall(
        `${action} DHCP host on ${network}`,
        api.networkUpdate,
        net,
        command,
        NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        hostXml,
        NETWORK_UPDATE_LIVE_AND_CONFIG,
      ),
    );
  }

  async deleteNetwork(name: string): Promise<void> {
    try {
      await this.withNetwork(name, async (net) => {
        if ((await call<number>(api.networkIsActive, net)) === 1)
          await this.intCall(`stop network ${name}`, api.networkDestroy, net);
        await this.intCall(`undefine network ${name}`, api.networkUndefine, net);
      });
    } catch (error) {
      if (!(error instanceof LibvirtError && error.code === VIR_ERR_NO_NETWORK)) throw error;
    }
  }

  async listNetworks(): Promise<string[]> {
    const out: [Pointer] = [null];
    const count = await this.intCall("list networks", api.connectListAllNetworks, this.conn, out, 0);
    if (count === 0 || !out[0]) return [];
    const handles = koffi.decode(out[0], koffi.array("void *", count)) as Pointer[];
    try {
      return handles.map((net) => api.networkGetName(net) as string);
    } finally {
      for (const net of handles) api.networkFree(net);
      free(out[0]);
    }
  }

  /** Calls `listener` with the domain name and event for every lifecycle event of this connection. */
  async onDomainEvent(
    listener: (name: string, event: (typeof DOMAIN_EVENTS)[number] | "unknown", detail: number) => void,
  ): Promise<void> {
    this.listeners.push(listener);
    await this.registerDomainEvents(listener);
  }

  private async registerDomainEvents(
    listener: (name: string, event: (typeof DOMAIN_EVENTS)[number] | "unknown", detail: number) => void,
  ): Promise<void> {
    const pointer = koffi.register((_conn: Pointer, dom: Pointer, event: number, detail: number) => {
      const name = api.domainGetName(dom) as string;
      listener(name, DOMAIN_EVENTS[event] ?? "unknown", detail);
      return 0;
    }, koffi.pointer(DomainEventCallback));
    const id = await this.intCall(
      "register domain events",
      api.domainEventRegisterAny,
      this.conn,
      null,
      0,
      pointer,
      null,
      null,
    );
    this.callbacks.push({ id, pointer });
  }

  /** The raw connection and ordered calls, for the sibling modules that bind more of the API (migration.ts). */
  get handle(): Pointer {
    return this.conn;
  }

  useDomain<T>(name: string, work: (dom: Pointer) => Promise<T>): Promise<T> {
    return this.withDomain(name, work);
  }

  callInt(
    operation: string,
    fn: { async: (...args: unknown[]) => void },
    ...args: unknown[]
  ): Promise<number> {
    return this.intCall(operation, fn, ...args);
  }

  callPointer(
    operation: string,
    fn: { async: (...args: unknown[]) => void },
    ...args: unknown[]
  ): Promise<Pointer> {
    return this.serial(
      operation,
      () => call<Pointer>(fn, ...args),
      (p) => !p,
    );
  }

  /** The domain's XML; `flags` e.g. VIR_DOMAIN_XML_MIGRATABLE. */
  domainXmlWith(name: string, flags: number): Promise<string> {
    return this.withDomain(name, (dom) =>
      this.heapString(`XML of ${name}`, () => call<Pointer>(api.domainGetXMLDesc, dom, flags)),
    );
  }

  async close(): Promise<void> {
    await this.queue;
    if (this.closed) return;
    this.closed = true;
    for (const { id, pointer } of this.callbacks) {
      await call(api.domainEventDeregisterAny, this.conn, id);
      koffi.unregister(pointer as never);
    }
    await call(api.connectClose, this.conn);
  }

  /**
   * Name and UUID are local to the handle; the state is a call to the daemon, so it runs off the
   * main thread like every such call: a blocking call on the main thread deadlocks as soon as the
   * event loop thread waits for the main thread to run an event callback.
   */
  private async describe(dom: Pointer): Promise<DomainInfo> {
    const uuid = Buffer.alloc(37);
    api.domainGetUUIDString(dom, uuid);
    const state = [0];
    const reason = [0];
    await this.intCall("domain state", api.domainGetState, dom, state, reason, 0);
    const domainState = DOMAIN_STATES[Number(state[0])] ?? "nostate";
    return {
      name: api.domainGetName(dom) as string,
      uuid: uuid.toString("latin1").replace(/\0.*$/s, ""),
      state: domainState,
      ...(domainState === "shutoff"
        ? { shutoffReason: SHUTOFF_REASONS[Number(reason[0])] ?? "unknown" }
        : {}),
    };
  }
}

/** libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release. */
function formatVersion(version: number): string {
  return `${Math.floor(version / 1_000_000)}.${Math.floor(version / 1000) % 1000}.${version % 1000}`;
}
