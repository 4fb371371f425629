// Structured JSON logs (pino). Every line of a reconcile carries the controller and object key.
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(name: string, level = process.env.STRATUS_LOG_LEVEL ?? "info"): Logger {
  return pino({ name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
