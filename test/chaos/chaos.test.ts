import { describe, expect, inject, it } from "vitest";
import { type ChaosBackend, runChaos } from "../../chaos/engine.ts";

/**
 * Issue 6, the chaos run in its short CI form (`npm run chaos` is the long one): 20 s of
 * seeded chaos per backend — repeated idempotency keys, cancels, crashing, hanging and
 * SIGTERM-ignoring jobs, SIGKILLs and SIGTERMs of the server (and of the embedded server's
 * job launcher) — then a drain, with every
 * invariant checked throughout (see chaos/engine.ts).
 */
// Seeds whose first faults include a plain SIGKILL, a SIGKILL as a job launches and a SIGTERM.
const SEEDS: Record<ChaosBackend, number> = { embedded: 7013, aws: 7004 };

describe.each(["embedded", "aws"] as const)("chaos run (%s backend, short form)", (backend) => {
  it("loses nothing, runs no request twice, keeps maxRunning and exact counters, never 5xx", async () => {
    const report = await runChaos({
      backend,
      seed: SEEDS[backend],
      durationMs: 20_000,
      ...(backend === "aws" ? { awsEndpoint: inject("awsEndpoint") } : {}),
    });
    if (report.violations.length > 0) {
      // The post-mortem: what happened around the violations.
      console.error(
        `chaos ${backend} seed ${report.seed} timeline:\n${report.timeline.join("\n")}`,
      );
    }
    expect(report.violations).toEqual([]);
    expect(report.requests).toBeGreaterThan(0);
    expect(report.serverKills).toBeGreaterThan(0);
    expect(report.restarts).toBeGreaterThan(0);
    if (backend === "embedded") expect(report.launcherKills).toBeGreaterThan(0);
    expect(report.samples).toBeGreaterThan(0);
    expect(report.counterChecks).toBeGreaterThan(0);
    expect(report.maxLiveJobs).toBeLessThanOrEqual(report.maxRunning);
  }, 240_000);
});
