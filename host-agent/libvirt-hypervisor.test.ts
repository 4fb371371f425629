import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { kvmUsability, movesLive } from "./libvirt-hypervisor.ts";

// libvirt's domain capabilities for virttype kvm on this project's machines (nested KVM).
const NESTED = readFileSync(new URL("./testing/domcaps-nested-kvm.xml", import.meta.url), "utf8");

describe("kvmUsability", () => {
  it("uses KVM when libvirt offers it with a full guest CPU", () => {
    const healthy = NESTED.replaceAll(/<feature policy='disable' name='[^']*'\/>/g, "");
    expect(kvmUsability(healthy)).toEqual({
      usable: true,
      reason: "libvirt offers KVM with a full guest CPU",
    });
  });

  it("falls back to emulation where nested KVM hides the x86-64-v2 baseline (guests hang there)", () => {
    const verdict = kvmUsability(NESTED);
    expect(verdict.usable).toBe(false);
    expect(verdict.reason).toBe(
      "KVM here cannot give guests pni, ssse3, sse4.1, sse4.2, popcnt (a limited nested KVM); using emulation",
    );
  });

  it("falls back to emulation without KVM", () => {
    expect(kvmUsability(undefined).usable).toBe(false);
    expect(kvmUsability(NESTED.replace("<domain>kvm</domain>", "<domain>qemu</domain>")).usable).toBe(false);
  });
});

describe("movesLive", () => {
  it("moves KVM guests live and pauses emulated ones for the copy", () => {
    expect(movesLive("<domain type='kvm' id='3'>\n  <name>x</name>")).toBe(true);
    expect(movesLive('<domain type="kvm">')).toBe(true);
    expect(movesLive("<domain type='qemu' id='3'>")).toBe(false);
    expect(movesLive("<domain type='test'>")).toBe(false);
  });
});
