// For unit tests of parameter parsing: the 431 a bad input is refused with, and its message.
import { expect } from "vitest";
import { ApiError } from "../envelope.ts";

export function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).code).toBe(431);
    return (error as ApiError).message;
  }
  throw new Error("accepted");
}
