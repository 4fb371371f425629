import { defineConfig } from "vitest/config";
import { ORCHESTRATION } from "./test/orchestration-files.ts";

// Unit tests sit next to the code they test and need nothing running; integration tests
// (test/integration) share one real control plane started by their global setup.
export default defineConfig({
  test: {
    reporters: ["default", "./test/summary-reporter.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["**/*.test.ts"],
          exclude: ["node_modules/**", "dist/**", "test/integration/**", "test/e2e/**"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          exclude: ORCHESTRATION,
          globalSetup: ["./test/integration/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          // 2 cores: one control plane plus two test workers is what the machine carries well.
          maxWorkers: 2,
        },
      },
      {
        test: {
          name: "orchestration",
          include: ORCHESTRATION,
          globalSetup: ["./test/integration/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          maxWorkers: 1,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
