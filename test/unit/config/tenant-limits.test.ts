import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../../functions/config/load.ts";
import { type QueueConfig, tenantLimits } from "../../../functions/config/schema.ts";

/** A config of one queue `q` with `fields` added. */
function withQueue(fields: Record<string, unknown>) {
  return { queues: { q: { command: ["true"], maxRunning: 4, maxQueued: 100, ...fields } } };
}

/** The queue `q` of a valid config. */
function queueQ(fields: Record<string, unknown>): QueueConfig {
  const q = parseConfig(withQueue(fields), "/").queues.q;
  if (!q) throw new Error("queue q is missing");
  return q;
}

function refusal(fields: Record<string, unknown>): string {
  try {
    parseConfig(withQueue(fields), "/");
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error("the config was accepted");
}

describe("sharing fields of a queue", () => {
  it("defaults the per-tenant limits to the queue's and leaves submits unlimited", () => {
    // Prepare
    const queue = queueQ({});

    // Act
    const limits = tenantLimits(queue, "anyone");

    // Assess
    expect(limits).toEqual({ maxRunning: 4, maxQueued: 100, rateLimit: null });
  });

  it("applies a named tenant's overrides and the queue's per-tenant fields to the rest", () => {
    // Prepare
    const queue = queueQ({
      maxRunningPerTenant: 2,
      maxQueuedPerTenant: 10,
      rateLimit: { requestsPerSecond: 5, burst: 10 },
      tenants: { research: { maxRunning: 3, rateLimit: { requestsPerSecond: 1, burst: 2 } } },
    });

    // Act
    const research = tenantLimits(queue, "research");
    const other = tenantLimits(queue, "search");

    // Assess
    expect(research).toEqual({
      maxRunning: 3,
      maxQueued: 10,
      rateLimit: { requestsPerSecond: 1, burst: 2 },
    });
    expect(other).toEqual({
      maxRunning: 2,
      maxQueued: 10,
      rateLimit: { requestsPerSecond: 5, burst: 10 },
    });
  });

  it("does not take an inherited object property for a tenant's overrides", () => {
    // Prepare
    const queue = queueQ({ maxRunningPerTenant: 1 });

    // Act
    const limits = tenantLimits(queue, "constructor");

    // Assess
    expect(limits.maxRunning).toBe(1);
  });

  it.each([
    [
      { maxRunningPerTenant: 5 },
      "queues.q.maxRunningPerTenant: must be at most the queue's maxRunning (4)",
    ],
    [
      { maxQueuedPerTenant: 101 },
      "queues.q.maxQueuedPerTenant: must be at most the queue's maxQueued (100)",
    ],
    [{ tenants: { a: { maxRunning: 9 } } }, "queues.q.tenants.a.maxRunning: must be at most"],
    [{ tenants: { a: { maxQueued: 0 } } }, "queues.q.tenants.a.maxQueued"],
    [{ tenants: { a: { speed: 1 } } }, "queues.q.tenants.a"],
    [{ rateLimit: { requestsPerSecond: 0, burst: 1 } }, "queues.q.rateLimit.requestsPerSecond"],
    [{ rateLimit: { requestsPerSecond: 1, burst: 0.5 } }, "queues.q.rateLimit.burst"],
    [{ rateLimit: { requestsPerSecond: 1 } }, "queues.q.rateLimit.burst"],
    [{ maxRunningPerTenant: 0 }, "queues.q.maxRunningPerTenant"],
  ])("stops start-up naming the field of %j", (fields, message) => {
    // Act
    const text = refusal(fields);

    // Assess
    expect(text).toContain(message);
  });
});
