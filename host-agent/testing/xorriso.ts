// Whether this machine has xorriso: tests that build real config drives need it.
import { execFileSync } from "node:child_process";

export const HAS_XORRISO = (() => {
  try {
    execFileSync("xorriso", ["-version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();
