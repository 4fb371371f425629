// Fuzzing the CloudStack API for tests: requests made of random commands, parameters and values
// (a fixed seed, so a failure replays), eight at a time, each answer's HTTP status checked against
// the codes CloudStack itself answers with. Fails on the first other status, with the request.
import { expect } from "vitest";
import { type Account, signedRequest } from "./cloudstack-accounts.ts";

export async function fuzzRequests(options: {
  endpoint: string;
  account: Account;
  commands: readonly string[];
  parameters: readonly string[];
  values: readonly string[];
  allowed: ReadonlySet<number>;
  total?: number;
  seed?: number;
}): Promise<Map<number, number>> {
  const total = options.total ?? 5_000;
  let seed = options.seed ?? 16;
  const pick = <T>(list: readonly T[]): T => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return list[seed % list.length] as T;
  };
  const seen = new Map<number, number>();
  let sent = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (sent < total) {
        sent++;
        const params: Record<string, string> = { command: pick(options.commands) };
        for (let n = pick([0, 1, 2, 3, 4]); n > 0; n--)
          params[pick(options.parameters)] = pick(options.values);
        const response = await signedRequest(options.endpoint, options.account, params);
        seen.set(response.status, (seen.get(response.status) ?? 0) + 1);
        if (!options.allowed.has(response.status))
          expect.fail(
            `${JSON.stringify(params)} answered ${response.status}: ${JSON.stringify(response.body)}`,
          );
      }
    }),
  );
  return seen;
}
