import { describe, expect, it } from "vitest";
import {
  type Network,
  rootVolumeName,
  type Template,
  type VirtualMachine,
  type Volume,
} from "../crds/index.ts";
import type { ObservedDomain } from "./hypervisor.ts";
import { diskChanges, type PlanInput, planVm, type RunPlan, reservationsFor, vmNics } from "./planner.ts";
import {
  dataVolume,
  directBootTemplate,
  diskTemplate,
  HOST,
  hostStorage,
  LOCAL_POOL,
  network,
  OWNER,
  offering,
  preparedVm,
  rootVolume,
} from "./testing/fixtures.ts";

function input(
  vm: VirtualMachine,
  overrides: Partial<PlanInput> & { volumes?: Volume[]; networks?: Network[] } = {},
): PlanInput {
  const volumes = overrides.volumes ?? [];
  const networks = overrides.networks ?? [network];
  return {
    vm,
    host: HOST,
    owner: OWNER,
    domain: undefined,
    inMaintenance: false,
    domainType: "kvm",
    offering,
    template: diskTemplate,
    iso: undefined,
    volume: (name) =>
      volumes.find((v) => v.metadata.name === name) ??
      (name === rootVolumeName(vm.metadata.name as string) ? rootVolume(vm) : undefined),
    diskOffering: () => undefined,
    network: (name) => networks.find((n) => n.metadata.name === name),
    storage: hostStorage("/pool"),
    zone: { name: "z1" },
    paths: { cache: "/cache", consoleSocket: "/console/x.sock" },
    storageLimited: false,
    ...overrides,
  };
}

const domain = (state: ObservedDomain["state"], extra: Partial<ObservedDomain> = {}): ObservedDomain => ({
  vmUid: "u",
  uuid: "u",
  state,
  owner: OWNER,
  disks: [],
  ...extra,
});

const condition = (type: string, status: "True" | "False", reason = "R", message = "m") => ({
  type,
  status,
  reason,
  message,
  lastTransitionTime: "2026-11-30T00:00:00Z",
});

describe("planVm", () => {
  it("runs a prepared VM: a KVM domain with a root overlay of the template, its NIC and the published address", () => {
    const vm = preparedVm("web");
    const plan = planVm(input(vm)) as RunPlan;
    expect(plan.kind).toBe("run");
    expect(plan.intent).toBe("run");
    expect(plan.root).toMatchObject({
      name: `root-${vm.metadata.uid}`,
      requestedBytes: 0n,
      image: { path: "/images/tiny.qcow2", format: "qcow2" },
      // A new root disk goes to the pool the placement rule gives.
      pool: "local-h1",
      existing: false,
    });
    expect(plan.domain).toMatchObject({
      type: "kvm",
      vcpus: 1,
      memoryBytes: 256n * 2n ** 20n,
      disks: [{ path: `/pool/root-${vm.metadata.uid}`, format: "qcow2", serial: "root" }],
      consoleSocket: "/console/x.sock",
    });
    expect(plan.nics).toMatchObject([{ name: "eth0", mac: "52:54:00:00:00:01", ip: "10.20.0.10" }]);
    expect(plan.domain.nics).toEqual([{ mac: "52:54:00:00:00:01", network: plan.nics[0]?.spec.name }]);
  });

  it("follows every runStrategy", () => {
    const cases: [
      NonNullable<VirtualMachine["spec"]["runStrategy"]>,
      ObservedDomain | undefined,
      string,
      string?,
    ][] = [
      ["Always", undefined, "run", "run"],
      ["Always", domain("shutoff", { shutoffReason: "shutdown" }), "run", "run"],
      ["RerunOnFailure", domain("shutoff", { shutoffReason: "crashed" }), "run", "run"],
      ["Halted", domain("running"), "run", "stop"],
      ["Halted", undefined, "power", "stop"],
      ["Manual", domain("shutoff"), "run", "leave"],
      ["Manual", undefined, "run", "leave"],
    ];
    for (const [runStrategy, observed, kind, intent] of cases) {
      const plan = planVm(input(preparedVm("vm", { spec: { runStrategy } }), { domain: observed }));
      expect({
        runStrategy,
        state: observed?.state,
        kind: plan.kind,
        intent: "intent" in plan ? plan.intent : undefined,
      }).toEqual({
        runStrategy,
        state: observed?.state,
        kind,
        intent,
      });
    }
  });

  it("leaves a guest that powered itself off alone under RerunOnFailure once that was reported", () => {
    const vm = preparedVm("vm", { spec: { runStrategy: "RerunOnFailure" } });
    vm.status?.conditions?.push({ ...condition("Ready", "True"), observedGeneration: 1 });
    const plan = planVm(input(vm, { domain: domain("shutoff", { shutoffReason: "shutdown" }) }));
    expect(plan).toMatchObject({ kind: "run", intent: "leave" });
  });

  it("waits, writing nothing, until the orchestration has prepared volumes and networks", () => {
    for (const [type, conditions] of [
      ["VolumesReady", [condition("VolumesReady", "False", "Creating"), condition("NetworksReady", "True")]],
      [
        "NetworksReady",
        [condition("VolumesReady", "True"), condition("NetworksReady", "False", "AddressesExhausted")],
      ],
      ["VolumesReady", []],
    ] as const) {
      const plan = planVm(input(preparedVm("vm", { status: { conditions: [...conditions] } })));
      expect(plan).toMatchObject({ kind: "wait", reason: `Waiting${type}` });
    }
    // A NIC whose address is not published yet: DHCP must know it first.
    const unaddressed = preparedVm("vm", { status: { nics: [] } });
    expect(planVm(input(unaddressed))).toMatchObject({ kind: "wait", reason: "WaitingForAddress" });
    // A data volume whose disk lives in a pool this host does not reach is never recreated here:
    // the VM waits for the disk to be copied in.
    const elsewhere = preparedVm("vm", { spec: { dataVolumes: [{ name: "data", volume: "d1" }] } });
    const onH2 = dataVolume("d1", {}, { host: "h2", pool: "local-h2", path: "/h2/data-vol-d1" });
    expect(planVm(input(elsewhere, { volumes: [onH2] }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForVolumeMove",
    });
    // The root volume too; and with no root Volume yet, the VM waits for the orchestration.
    const vm = preparedVm("vm");
    expect(planVm(input(vm, { volumes: [rootVolume(vm, { host: "h2", pool: "local-h2" })] }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForVolumeMove",
    });
    expect(planVm(input(vm, { volume: () => undefined }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForVolume",
    });
  });

  it("still stops a running guest while the orchestration re-evaluates it", () => {
    const vm = preparedVm("vm", {
      spec: { runStrategy: "Halted" },
      status: { conditions: [condition("VolumesReady", "False")] },
    });
    expect(planVm(input(vm, { domain: domain("running") }))).toEqual({ kind: "power", intent: "stop" });
  });

  it("reports what a user can fix", () => {
    const vm = preparedVm("vm", { spec: { dataVolumes: [{ name: "data", volume: "gone" }] } });
    const problems: [PlanInput, string][] = [
      [input(preparedVm("vm"), { offering: undefined }), "ServiceOfferingNotFound"],
      [input(preparedVm("vm"), { template: undefined }), "TemplateNotFound"],
      [input(vm), "VolumeNotFound"],
      [input(preparedVm("vm"), { networks: [] }), "NetworkNotFound"],
      [
        input(preparedVm("vm", { spec: { dataVolumes: [{ name: "data", volume: "d" }] } }), {
          volumes: [dataVolume("d", { size: undefined as never, diskOffering: "missing" })],
        }),
        "VolumeSizeUnknown",
      ],
    ];
    for (const [given, reason] of problems) {
      const plan = planVm(given);
      expect(plan.kind === "problem" ? plan.problem.reason : plan.kind).toBe(reason);
    }
  });

  it("makes no disk, and grows none, beyond what the account's primary-storage limit granted", () => {
    const vm = preparedVm("vm", { spec: { dataVolumes: [{ name: "logs", volume: "d1" }] } });
    const refused = dataVolume(
      "d1",
      { size: "2Gi" },
      {
        conditions: [condition("Admitted", "False", "ResourceLimitExceeded", "over the account's limit")],
      },
    );
    expect(planVm(input(vm, { volumes: [refused] }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForStorageLimit",
      message: "over the account's limit",
    });
    // In an account with a limit, a volume not decided yet waits too (the root one here), saying
    // for what; without a limit nothing waits for a grant.
    const root = rootVolume(vm);
    expect(planVm(input(preparedVm("vm"), { volumes: [root], storageLimited: true }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForStorageLimit",
      message: expect.stringContaining("waits for the storage controller to admit 1Gi"),
    });
    expect(planVm(input(preparedVm("vm"), { volumes: [root] })).kind).toBe("run");
    // A disk that exists keeps its size and grows only as far as the grant.
    const resized = dataVolume(
      "d1",
      { size: "4Gi" },
      { host: "h1", pool: LOCAL_POOL, capacity: "2Gi", admittedSize: "3Gi" },
    );
    expect(
      (
        planVm(
          input(vm, { volumes: [resized, rootVolume(vm, { admittedSize: "1Gi" })], storageLimited: true }),
        ) as RunPlan
      ).dataDisks,
    ).toMatchObject([{ capacityBytes: 3n * 2n ** 30n }]);
    expect((planVm(input(vm, { volumes: [resized] })) as RunPlan).dataDisks).toMatchObject([
      { capacityBytes: 4n * 2n ** 30n },
    ]);
  });

  it("plans data volumes as disks after the root disk, sized by their Volume", () => {
    const vm = preparedVm("vm", { spec: { dataVolumes: [{ name: "logs", volume: "d1" }] } });
    const plan = planVm(input(vm, { volumes: [dataVolume("d1", { size: "2Gi" })] })) as RunPlan;
    expect(plan.dataDisks).toMatchObject([
      { name: "data-vol-d1", capacityBytes: 2n * 2n ** 30n, serial: "logs" },
    ]);
    expect(plan.domain.disks.map((d) => d.path)).toEqual([
      `/pool/root-${vm.metadata.uid}`,
      "/pool/data-vol-d1",
    ]);
  });

  it("boots a direct-boot template from its cached kernel, with no root disk unless a size is asked for", () => {
    const vm = preparedVm("vm", { spec: { template: "kernel" } });
    const template: Template = directBootTemplate;
    const plan = planVm(input(vm, { template })) as RunPlan;
    expect(plan.root).toBeUndefined();
    expect(plan.domain.directBoot).toEqual({
      kernel: "/cache/tmpl-2.kernel",
      initrd: "/cache/tmpl-2.initrd",
      commandLine: "console=ttyS0",
    });
    const sized = planVm(
      input(preparedVm("vm", { spec: { template: "kernel", rootDisk: { size: "1Gi" } } }), { template }),
    ) as RunPlan;
    expect(sized.root).toMatchObject({ name: `root-${vm.metadata.uid}`, requestedBytes: 2n ** 30n });
    expect(sized.root?.image).toBeUndefined();
  });

  describe("ISOs", () => {
    const installer: Template = {
      ...diskTemplate,
      metadata: { name: "installer", uid: "iso-1" },
      spec: { source: { hostPath: "/images/installer.iso" }, format: "iso" },
    };
    it("boots a VM deployed from an ISO from its drive, then a blank root disk of the size asked for", () => {
      const vm = preparedVm("vm", {
        spec: { template: "installer", iso: "installer", rootDisk: { size: "2Gi" } },
      });
      const plan = planVm(input(vm, { template: installer, iso: installer })) as RunPlan;
      expect(plan.root).toMatchObject({ requestedBytes: 2n * 2n ** 30n });
      expect(plan.root?.image).toBeUndefined();
      expect(plan.iso).toEqual({ path: "/images/installer.iso" });
      expect(plan.domain).toMatchObject({ iso: "/images/installer.iso", bootFromIso: true });
      const unsized = preparedVm("vm", { spec: { template: "installer", iso: "installer" } });
      expect(planVm(input(unsized, { template: installer, iso: installer }))).toMatchObject({
        kind: "problem",
        problem: { reason: "RootDiskSizeMissing" },
      });
    });

    it("puts spec.iso's disc in the drive of a VM of a disk template, which still boots from its disk", () => {
      const vm = preparedVm("vm", { spec: { iso: "installer" } });
      const plan = planVm(input(vm, { iso: installer })) as RunPlan;
      expect(plan.domain.iso).toBe("/images/installer.iso");
      expect(plan.domain.bootFromIso).toBeUndefined();
      expect(plan.root?.image).toBeDefined();
      expect(planVm(input(vm))).toMatchObject({ kind: "problem", problem: { reason: "IsoNotFound" } });
      expect(planVm(input(vm, { iso: diskTemplate }))).toMatchObject({
        kind: "problem",
        problem: { reason: "NotAnIso" },
      });
    });
  });

  it("asks for a restart only while the annotation differs from what was done", () => {
    const asked = preparedVm("vm", {
      metadata: { annotations: { "stratus.io/restart-requested-at": "t1" } },
    });
    expect((planVm(input(asked)) as RunPlan).restartRequest).toBe("t1");
    const done = preparedVm("vm", {
      metadata: { annotations: { "stratus.io/restart-requested-at": "t1" } },
      status: { restartedAt: "t1" },
    });
    expect((planVm(input(done)) as RunPlan).restartRequest).toBeUndefined();
  });

  it("releases a deleted VM and evacuates on maintenance before anything else", () => {
    const deleting = preparedVm("vm", { metadata: { deletionTimestamp: "2026-11-30T00:00:00Z" } });
    expect(planVm(input(deleting, { inMaintenance: true }))).toEqual({ kind: "release" });
    expect(planVm(input(preparedVm("vm"), { inMaintenance: true }))).toEqual({ kind: "evacuate" });
  });

  it("boots from a template made from a volume once its image is written, copied and checked like a download", () => {
    const made: Template = {
      ...diskTemplate,
      spec: { source: { volume: { namespace: "team-a", name: "golden" } } },
    };
    expect(planVm(input(preparedVm("vm"), { template: made }))).toMatchObject({
      kind: "wait",
      reason: "WaitingForTemplate",
    });
    const image = {
      zone: "z1",
      host: "h9",
      path: "/secondary/templates/t.qcow2",
      sha256: "b".repeat(64),
      bytes: 9,
    };
    const plan = planVm(input(preparedVm("vm"), { template: { ...made, status: { image } } })) as RunPlan;
    expect(plan.root?.image).toEqual({
      path: `/cache/${diskTemplate.metadata.uid}.qcow2`,
      format: "qcow2",
      url: image.path,
      checksum: `sha256:${image.sha256}`,
    });
  });

  describe("a URL template", () => {
    const url: Template = {
      ...diskTemplate,
      spec: { source: { url: "http://images.example/t.qcow2" }, checksum: `sha256:${"c".repeat(64)}` },
    };
    const inZone = (entry: NonNullable<NonNullable<Template["status"]>["zones"]>[number]) => ({
      ...url,
      status: { zones: [entry] },
    });
    const withSecondary = { zone: { name: "z1", secondaryPath: "/secondary" } };
    const rootImage = (template: Template, overrides: Partial<PlanInput> = withSecondary) =>
      (planVm(input(preparedVm("vm"), { template, ...overrides })) as RunPlan).root?.image;
    const cached = `/cache/${diskTemplate.metadata.uid}.qcow2`;

    it("is copied from the zone's secondary storage once Ready there, checked against the sum the download had", () => {
      const ready = inZone({ zone: "z1", host: "h2", state: "Ready", sha256: "d".repeat(64), bytes: 9 });
      expect(rootImage(ready)).toEqual({
        path: cached,
        format: "qcow2",
        url: `/secondary/templates/${diskTemplate.metadata.uid}.qcow2`,
        checksum: `sha256:${"d".repeat(64)}`,
      });
    });

    it("is downloaded by each host itself where the zone has no secondary storage", () => {
      expect(rootImage(url, { zone: { name: "z1" } })).toEqual({
        path: cached,
        format: "qcow2",
        url: "http://images.example/t.qcow2",
        checksum: `sha256:${"c".repeat(64)}`,
      });
    });

    it("makes a new VM wait, saying so, until the zone has it; a failed or removed image is a problem", () => {
      const plan = (template: Template) => planVm(input(preparedVm("vm"), { template, ...withSecondary }));
      expect(plan(url)).toEqual({
        kind: "wait",
        reason: "WaitingForTemplate",
        message:
          "Template disk-image waits for a Ready host of zone z1 to download it to the zone's secondary storage.",
        shown: true,
      });
      expect(plan(inZone({ zone: "z1", host: "h2", state: "Downloading", bytes: 5 }))).toMatchObject({
        kind: "wait",
        message: "Template disk-image is being downloaded to zone z1's secondary storage by host h2.",
        shown: true,
      });
      const failed = inZone({
        zone: "z1",
        host: "h2",
        state: "Error",
        reason: "ChecksumMismatch",
        message: "bad sum",
      });
      expect(plan(failed)).toMatchObject({ kind: "problem", problem: { reason: "TemplateDownloadFailed" } });
      expect((plan(failed) as { problem: Error }).problem.message).toBe(
        "Template disk-image could not be downloaded to zone z1: bad sum",
      );
      const removing = inZone({
        zone: "z1",
        host: "h2",
        state: "Ready",
        sha256: "d".repeat(64),
        remove: true,
      });
      expect(plan(removing)).toMatchObject({ kind: "problem", problem: { reason: "TemplateDeleted" } });
    });

    it("lets a VM whose root disk exists go on from its cached copy", () => {
      const vm = preparedVm("vm");
      const made = rootVolume(vm, { phase: "Ready", host: HOST, pool: "local-h1", path: "/pool/root" });
      const plan = planVm(input(vm, { template: url, volumes: [made], ...withSecondary })) as RunPlan;
      expect(plan.root?.image).toEqual({ path: cached, format: "qcow2" });
    });
  });

  it("lets a stopped VM pinned to another host go, and never a running one", () => {
    const pinned = (runStrategy: "Halted" | "Always") =>
      preparedVm("vm", { spec: { runStrategy, placement: { host: "elsewhere" } } });
    expect(planVm(input(pinned("Halted")))).toEqual({ kind: "evacuate" });
    expect(planVm(input(pinned("Always"))).kind).not.toBe("evacuate");
    const here = preparedVm("vm", { spec: { runStrategy: "Halted", placement: { host: HOST } } });
    expect(planVm(input(here)).kind).not.toBe("evacuate");
  });
});

describe("diskChanges", () => {
  const root = { path: "/pool/root-u", format: "qcow2" as const, serial: "root" };
  const data = { path: "/pool/data-v", format: "qcow2" as const, serial: "logs" };

  it("redefines a stopped domain whose disks differ, and leaves an identical one", () => {
    const off = domain("shutoff", { disks: [{ path: root.path, target: "vda" }] });
    const none = { attach: [], detach: [], swapIso: false };
    expect(diskChanges(off, [root, data])).toEqual({ redefine: true, ...none });
    expect(diskChanges(off, [root])).toEqual({ redefine: false, ...none });
  });

  it("redefines a stopped domain whose config drive comes or goes, never hot plugs one", () => {
    const off = domain("shutoff", { disks: [{ path: root.path, target: "vda" }] });
    expect(diskChanges(off, [root], "/cache/config-drives/u.iso").redefine).toBe(true);
    const withDrive = domain("shutoff", {
      disks: [{ path: root.path, target: "vda" }],
      configDrive: "/cache/config-drives/u.iso",
    });
    expect(diskChanges(withDrive, [root], "/cache/config-drives/u.iso").redefine).toBe(false);
    expect(diskChanges(withDrive, [root]).redefine).toBe(true);
    const running = domain("running", { disks: [{ path: root.path, target: "vda" }] });
    expect(diskChanges(running, [root], "/cache/config-drives/u.iso")).toEqual({
      redefine: false,
      attach: [],
      detach: [],
      swapIso: false,
    });
  });

  it("hot plugs into a running domain: the next free device for a new volume, only data disks detached", () => {
    const running = domain("running", {
      disks: [
        { path: root.path, target: "vda" },
        { path: "/pool/data-old", target: "vdb" },
      ],
    });
    expect(diskChanges(running, [root, data])).toEqual({
      redefine: false,
      attach: [{ disk: data, target: "vdb" }],
      detach: [{ path: "/pool/data-old", target: "vdb" }],
      swapIso: false,
    });
    const withoutRoot = domain("running", { disks: [{ path: root.path, target: "vda" }] });
    expect(diskChanges(withoutRoot, []).detach).toEqual([]);
  });

  it("redefines a stopped domain whose ISO changes, and swaps the disc of a running one", () => {
    const disc = "/cache/iso-uid.raw";
    const off = domain("shutoff", { disks: [{ path: root.path, target: "vda" }] });
    expect(diskChanges(off, [root], undefined, disc)).toMatchObject({ redefine: true, swapIso: false });
    const running = domain("running", { disks: [{ path: root.path, target: "vda" }], iso: disc });
    expect(diskChanges(running, [root], undefined, disc)).toMatchObject({ redefine: false, swapIso: false });
    expect(diskChanges(running, [root])).toMatchObject({ redefine: false, swapIso: true });
    expect(diskChanges(running, [root], undefined, "/cache/other.raw").swapIso).toBe(true);
  });
});

describe("NICs and DHCP reservations", () => {
  it("takes the orchestration's MAC and address, and reserves only live VMs' addressed NICs on that network", () => {
    const a = preparedVm("a");
    const b = preparedVm("b", {
      status: {
        nics: [
          { name: "eth0", network: "backend", macAddress: "52:54:00:00:00:02", ipAddress: "10.20.0.11" },
        ],
      },
    });
    const gone = preparedVm("c", { metadata: { deletionTimestamp: "2026-11-30T00:00:00Z" } });
    const other = preparedVm("d", { spec: { nics: [{ name: "eth0", network: "frontend" }] } });
    expect(vmNics(a)).toEqual([
      { name: "eth0", network: "backend", mac: "52:54:00:00:00:01", ip: "10.20.0.10" },
    ]);
    expect(reservationsFor(network, [a, b, gone, other])).toEqual([
      { mac: "52:54:00:00:00:01", ip: "10.20.0.10", name: "a" },
      { mac: "52:54:00:00:00:02", ip: "10.20.0.11", name: "b" },
    ]);
  });
});
