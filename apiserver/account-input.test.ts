import { describe, expect, it } from "vitest";
import {
  accountNamespace,
  accountRole,
  checkUserInput,
  hashPassword,
  kubernetesUser,
  passwordMatchesHash,
} from "./account-input.ts";
import { ApiError } from "./envelope.ts";

const refusal = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ApiError);
    return { code: (error as ApiError).code, message: (error as ApiError).message };
  }
  throw new Error("not refused");
};

describe("account names", () => {
  it.each(["team-a", "a", "a1-b2", "x".repeat(63)])("takes %s as its namespace", (name) => {
    expect(accountNamespace(name)).toBe(name);
  });
  it.each(["Team-A", "team_a", "-team", "team-", "", "x".repeat(64), "team.a", "team a"])(
    "refuses %j: not a DNS label",
    (name) => {
      const { code, message } = refusal(() => accountNamespace(name));
      expect(code).toBe(431);
      expect(message).toContain("must be a DNS label");
    },
  );
  it.each(["default", "kube-system", "kube-public", "stratus-system", "stratus-api-keys"])(
    "refuses the system namespace %s",
    (name) => {
      expect(refusal(() => accountNamespace(name)).message).toContain("system namespace");
    },
  );
});

describe("account roles", () => {
  it.each([
    [undefined, undefined, "User"],
    ["0", undefined, "User"],
    ["1", undefined, "Admin"],
    [undefined, "Admin", "Admin"],
    [undefined, "User", "User"],
    ["1", "Admin", "Admin"],
  ] as const)("accounttype %s roletype %s is %s", (type, role, expected) => {
    expect(accountRole(type, role)).toBe(expected);
  });
  it.each([
    ["2", undefined],
    [undefined, "DomainAdmin"],
    [undefined, "admin"],
    ["0", "Admin"],
  ] as const)("refuses accounttype %s roletype %s", (type, role) => {
    expect(refusal(() => accountRole(type, role)).code).toBe(431);
  });
});

describe("user input", () => {
  const valid = { username: "alice", password: "pw", email: "a@example.com", firstname: "A", lastname: "L" };
  it("takes a valid user", () => {
    expect(checkUserInput(valid)).toEqual(valid);
  });
  it.each([
    { username: "" },
    { username: "al ice" },
    { username: "system:admin" },
    { username: "a".repeat(256) },
    { password: "" },
    { email: "nobody" },
  ])("refuses %j", (change) => {
    expect(refusal(() => checkUserInput({ ...valid, ...change })).code).toBe(431);
  });
  it("names a Kubernetes user that is never a system: one", () => {
    expect(kubernetesUser("team-a", "alice")).toBe("cloudstack:team-a:alice");
  });
});

describe("password hashes", () => {
  it("keeps no password in clear and checks it", () => {
    const stored = hashPassword("s3cret");
    expect(stored).not.toContain("s3cret");
    expect(stored).toMatch(/^scrypt\$/);
    expect(passwordMatchesHash("s3cret", stored)).toBe(true);
    expect(passwordMatchesHash("s3cret!", stored)).toBe(false);
    expect(hashPassword("s3cret")).not.toBe(stored);
  });
  it.each(["", "s3cret", "scrypt$", "scrypt$abc$short", "md5$x$y"])("refuses the malformed %j", (stored) => {
    expect(passwordMatchesHash("s3cret", stored)).toBe(false);
  });
});
