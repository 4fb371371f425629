// How `stratus status` tells what the supervisor recorded about a component, in one line.
import type { ComponentStatus } from "./supervisor.ts";

/** One line per component for `stratus status`, e.g. "running (pid 42, up 3m 5s, 1 restart, last exit: signal SIGKILL)". */
export function describeComponent(status: ComponentStatus, now: number): string {
  const since = (iso: string | null) => (iso ? formatDuration(now - Date.parse(iso)) : "?");
  const parts: string[] = [];
  if (status.state === "running") parts.push(`pid ${status.pid}`, `up ${since(status.lastStartAt)}`);
  if (status.state === "backing-off" && status.nextStartAt)
    parts.push(`next start in ${formatDuration(Math.max(0, Date.parse(status.nextStartAt) - now))}`);
  parts.push(`${status.restarts} restart${status.restarts === 1 ? "" : "s"}`);
  if (status.lastExit) {
    const { code, signal, at } = status.lastExit;
    parts.push(`last exit: ${describeExit(code, signal)}, ${formatDuration(now - Date.parse(at))} ago`);
  }
  return `${status.state} (${parts.join(", ")})`;
}

export function describeExit(code: number | null, signal: string | null): string {
  return signal ? `signal ${signal}` : code !== null ? `code ${code}` : "status unknown";
}

export function formatDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
}
