/**
 * `GET /v1/metrics` of a real server on both backends (SQLite, and the AWS adapters on the
 * emulator), read with a Prometheus text-format parser: the figures follow real jobs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseScrape } from "../helpers/prometheus.ts";
import { BACKENDS, demoQueue, TestServer } from "../helpers/server.ts";

describe.each(BACKENDS)("GET /v1/metrics (%s backend)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      work: demoQueue({ maxRunning: 1, maxAttempts: 2 }),
      idle: demoQueue(),
    },
  });
  beforeAll(() => server.start(), 60_000);
  afterAll(() => server.dispose());

  async function scrape() {
    const res = await server.fetch("/v1/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseScrape(res.body as string);
  }

  it("needs a token like every /v1 route", async () => {
    expect((await server.fetch("/v1/metrics", { token: null })).status).toBe(401);
  });

  it("counts real jobs: submitted, finished by status, waits, attempt run times, live gauge", async () => {
    const ok = (await server.submit("work", { input: { steps: 2, sleepMs: 50 } })).body.id;
    // Fails its first attempt, succeeds on the second: two attempts, one finish.
    const retried = (
      await server.submit("work", { input: { steps: 2, sleepMs: 50, fail: "first-attempt" } })
    ).body.id;
    const failed = (
      await server.submit("work", { input: { steps: 2, sleepMs: 50, fail: "always" } })
    ).body.id;
    for (const id of [ok, retried]) await server.waitForStatus(id, "SUCCEEDED");
    await server.waitForStatus(failed, "FAILED");
    const holder = (await server.submit("work", { input: { steps: 400, sleepMs: 100 } })).body.id;
    await server.waitForStatus(holder, "RUNNING");
    await server.submit("work", { input: { steps: 1 } });

    const m = await scrape();
    expect(m.value("longrun_requests_submitted_total", { queue: "work" })).toBe(5);
    expect(m.value("longrun_requests_submitted_total", { queue: "idle" })).toBe(0);
    expect(m.value("longrun_requests_finished_total", { queue: "work", status: "SUCCEEDED" })).toBe(
      2,
    );
    expect(m.value("longrun_requests_finished_total", { queue: "work", status: "FAILED" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "work", status: "RUNNING" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "work", status: "QUEUED" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "work", status: "STARTING" })).toBe(0);
    const wait = m.histogram("longrun_wait_seconds", { queue: "work" });
    expect(wait?.count).toBe(4);
    expect(wait?.buckets["+Inf"]).toBe(4);
    // ok 1, retried 2, failed 2: five attempts ended after running.
    const run = m.histogram("longrun_run_seconds", { queue: "work" });
    expect(run?.count).toBe(5);
    expect(run?.sum).toBeGreaterThan(0);

    await server.fetch(`/v1/requests/${holder}/cancel`, { method: "POST" });
    await server.waitForStatus(holder, "CANCELLED");
    const after = await scrape();
    expect(
      after.value("longrun_requests_finished_total", { queue: "work", status: "CANCELLED" }),
    ).toBe(1);
  }, 120_000);
});
