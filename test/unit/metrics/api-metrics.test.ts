import { afterEach, describe, expect, it } from "vitest";
import { listenAll } from "../../../functions/core/usecases/deps.ts";
import { dashboardFromBuild } from "../../../functions/dashboard/build.ts";
import { DASHBOARD_CSP } from "../../../functions/http/dashboard.ts";
import { QueueStatsSchema } from "../../../functions/http/schemas.ts";
import { QueueHistory } from "../../../functions/metrics/history.ts";
import { PrometheusMetrics } from "../../../functions/metrics/prometheus.ts";
import { parseScrape } from "../../helpers/prometheus.ts";
import { type ApiHarness, makeApi } from "../http/api-harness.ts";

let h: ApiHarness | undefined;
afterEach(() => h?.close());

/** The API over fakes with the server's metrics and history wired as main.ts wires them. */
function harness(): { h: ApiHarness; history: QueueHistory } {
  const history = new QueueHistory();
  let prom: PrometheusMetrics | undefined;
  const made = makeApi(
    { gpu: { maxQueued: 10, maxRunning: 2, maxAttempts: 2, timeoutSeconds: 3600 }, cpu: {} },
    {
      metrics: () => (prom as PrometheusMetrics).render(made.store),
      history,
      dashboard: dashboardFromBuild(),
    },
  );
  prom = new PrometheusMetrics(made.queues);
  const recordChanges = made.deps.onChange;
  Object.assign(made.deps, listenAll([{ onChange: recordChanges }, prom.figures, history]));
  h = made;
  return { h: made, history };
}

describe("GET /v1/metrics", () => {
  it("counts submits, finishes, waits and per-attempt run times with SPEC's names", async () => {
    const { h } = harness();
    const ok = await h.submit("gpu");
    const failing = await h.submit("gpu");
    h.clock.advanceSeconds(7);
    await h.startNext("gpu");
    h.clock.advanceSeconds(20);
    await h.compute.exited(ok, 1, "succeeded");
    // First attempt fails after 20 s and is retried; the second fails after 3 s: FAILED.
    await h.compute.exited(failing, 1, "failed");
    await h.compute.running(failing, 2);
    h.clock.advanceSeconds(3);
    await h.compute.exited(failing, 2, "failed");
    await h.submit("gpu");

    const res = await h.call("GET", "/v1/metrics");
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parseScrape(res.text);
    expect(m.families.get("longrun_requests_submitted_total")?.type).toBe("COUNTER");
    expect(m.value("longrun_requests_submitted_total", { queue: "gpu" })).toBe(3);
    expect(m.value("longrun_requests_submitted_total", { queue: "cpu" })).toBe(0);
    expect(m.value("longrun_requests_finished_total", { queue: "gpu", status: "SUCCEEDED" })).toBe(
      1,
    );
    expect(m.value("longrun_requests_finished_total", { queue: "gpu", status: "FAILED" })).toBe(1);
    expect(m.families.get("longrun_wait_seconds")?.type).toBe("HISTOGRAM");
    expect(m.histogram("longrun_wait_seconds", { queue: "gpu" })).toMatchObject({
      count: 2,
      sum: 14,
    });
    // Three attempts ended after running: 20 s, 20 s and 3 s.
    expect(m.histogram("longrun_run_seconds", { queue: "gpu" })).toMatchObject({
      count: 3,
      sum: 43,
    });
    expect(m.families.get("longrun_queue_requests")?.type).toBe("GAUGE");
    expect(m.value("longrun_queue_requests", { queue: "gpu", status: "QUEUED" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "gpu", status: "RUNNING" })).toBe(0);
    expect(m.value("longrun_webhook_deliveries_total", { result: "delivered" })).toBe(0);
    // No tenant label anywhere.
    for (const family of m.families.values()) {
      for (const sample of family.metrics) expect(sample.labels?.tenant).toBeUndefined();
    }
  });

  it("reads STARTING and RUNNING from the store on each scrape", async () => {
    const { h } = harness();
    const a = await h.submit("gpu");
    await h.submit("gpu");
    await h.startNext("gpu");
    await h.compute.exited(a, 1, "succeeded");
    await h.submit("gpu");
    // One RUNNING; the freed slot's next claim stays STARTING until its job reports.
    const { dispatchQueue } = await import("../../../functions/core/usecases/lifecycle.ts");
    await dispatchQueue("gpu", h.deps);
    const m = parseScrape((await h.call("GET", "/v1/metrics")).text);
    expect(m.value("longrun_queue_requests", { queue: "gpu", status: "RUNNING" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "gpu", status: "STARTING" })).toBe(1);
    expect(m.value("longrun_queue_requests", { queue: "gpu", status: "QUEUED" })).toBe(0);
  });

  it("needs a valid token", async () => {
    const { h } = harness();
    expect((await h.call("GET", "/v1/metrics", { token: null })).status).toBe(401);
    expect((await h.call("GET", "/v1/metrics", { token: "nope" })).status).toBe(401);
  });

  it("answers 404 where the deployment keeps no registry (Lambda: CloudWatch)", async () => {
    h = makeApi();
    const res = await h.call("GET", "/v1/metrics");
    expect(res.status).toBe(404);
    expect(res.json.detail).toMatch(/CloudWatch/);
  });
});

describe("GET /v1/queues/{queue}/stats", () => {
  it("shows the queue's samples and only the caller's own waits", async () => {
    const { h, history } = harness();
    history.record("gpu", { queued: 4, running: 1 }, h.clock.now() - 120_000);
    const mine = await h.submit("gpu");
    await h.submit("gpu", { input: 1 }, "tok-bob");
    h.clock.advanceSeconds(9);
    await h.startNext("gpu");
    const res = await h.call("GET", "/v1/queues/gpu/stats");
    expect(res.status).toBe(200);
    const stats = QueueStatsSchema.parse(res.json);
    expect(stats.samples.map((s) => [s.queued, s.running])).toEqual([
      [4, 1],
      [0, 2],
    ]);
    expect(stats.waits).toEqual([{ at: new Date(h.clock.now()).toISOString(), seconds: 9 }]);
    const bobs = QueueStatsSchema.parse(
      (await h.call("GET", "/v1/queues/gpu/stats", { token: "tok-bob" })).json,
    );
    expect(bobs.waits).toHaveLength(1);
    expect(mine).toBeTruthy();
  });

  it("honours minutes, refuses a bad one, and 404s an unknown queue", async () => {
    const { h, history } = harness();
    history.record("gpu", { queued: 1, running: 0 }, h.clock.now() - 30 * 60_000);
    const ten = await h.call("GET", "/v1/queues/gpu/stats", { query: { minutes: "10" } });
    expect(ten.json.samples).toHaveLength(1);
    const bad = await h.call("GET", "/v1/queues/gpu/stats", { query: { minutes: "0" } });
    expect(bad.status).toBe(400);
    expect((await h.call("GET", "/v1/queues/nope/stats")).status).toBe(404);
    expect((await h.call("GET", "/v1/queues/gpu/stats", { token: null })).status).toBe(401);
  });
});

describe("dashboard files", () => {
  it("redirects / to /ui/ and serves the page with a strict CSP and no token", async () => {
    const { h } = harness();
    const root = await h.call("GET", "/", { token: null });
    expect(root.status).toBe(302);
    expect(root.headers.location).toBe("/ui/");
    const bare = await h.call("GET", "/ui", { token: null });
    expect([bare.status, bare.headers.location]).toEqual([302, "/ui/"]);
    const page = await h.call("GET", "/ui/", { token: null });
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toMatch(/^text\/html/);
    expect(page.headers["content-security-policy"]).toBe(DASHBOARD_CSP);
    expect(DASHBOARD_CSP).not.toMatch(/unsafe|\*|https?:/);
    expect(page.text).toContain('src="/ui/app.js"');
    // Nothing inline: no script or style body in the page.
    expect(page.text).not.toMatch(/<script[^>]*>[^<]/);
    expect(page.text).not.toMatch(/<style|style=/);
    const js = await h.call("GET", "/ui/app.js", { token: null });
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toMatch(/^text\/javascript/);
    expect(js.headers["content-security-policy"]).toBe(DASHBOARD_CSP);
    const css = await h.call("GET", "/ui/app.css", { token: null });
    expect(css.headers["content-type"]).toMatch(/^text\/css/);
    expect(css.text).not.toMatch(/url\(|@import/);
  });

  it("answers 404 for a file that is not part of the build", async () => {
    const { h } = harness();
    for (const path of ["/ui/nope.js", "/ui/..%2Fpackage.json", "/ui/index.html/x"]) {
      const res = await h.call("GET", path, { token: null });
      expect(res.status, path).toBe(404);
    }
  });
});
