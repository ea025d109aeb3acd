import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKENDS, ROOT, TestServer } from "../helpers/server.ts";

/** Deadlines of the waits below; the test's own timeout is their sum plus two server starts. */
const WAIT_MS = { midTraining: 90_000, done: 180_000 } as const;
const TEST_TIMEOUT_MS = WAIT_MS.midTraining + WAIT_MS.done + 2 * 40_000;

/**
 * The numpy fine-tuning example end to end, including a server SIGKILL mid-training. It is
 * real work (about 35 s alone on two cores): every wait is on a condition, and the
 * test's timeout covers their deadlines instead of the 60 s default a loaded machine
 * breaks.
 */
describe.each(BACKENDS)("finetune example (%s backend, e2e)", (backend) => {
  const server = new TestServer({
    backend,
    queues: {
      finetune: {
        command: ["python3", join(ROOT, "jobs/examples/finetune/train.py")],
        maxRunning: 1,
        timeoutSeconds: 300,
        cancelGraceSeconds: 10,
        env: { EPOCHS_DEFAULT: "3" },
      },
    },
  });
  beforeAll(() => server.start());
  afterAll(() => server.dispose());

  it(
    "trains, survives a server kill, resumes from its checkpoint and returns metrics and weights",
    async () => {
      const sub = await server.submit("finetune", {
        input: { epochs: 6, learningRate: 0.5, seed: 7 },
      });
      expect(sub.status).toBe(202);
      const mid = await server.waitFor(sub.body.id, (r) => (r.progress?.current ?? 0) >= 2, {
        timeoutMs: WAIT_MS.midTraining,
      });
      expect(mid.progress.total).toBe(6);
      await server.kill("SIGKILL");
      await server.start();
      const done = await server.waitForStatus(sub.body.id, "SUCCEEDED", WAIT_MS.done);
      expect(done.attempt).toBe(2);
      const result = await server.fetch(`/v1/requests/${sub.body.id}/result`);
      expect(result.status).toBe(200);
      const out = result.body.output;
      expect(out.epochs).toBe(6);
      expect(out.resumedFromEpoch).toBeGreaterThanOrEqual(2);
      expect(out.accuracy).toBeGreaterThan(0.5);
      const model = result.body.artifacts.find((a: { name: string }) => a.name === "model.npz");
      expect(model).toBeDefined();
      const bytes = new Uint8Array(await (await fetch(model.url)).arrayBuffer());
      expect(bytes.byteLength).toBe(model.size);
      expect(bytes[0]).toBe(0x50); // "PK": an .npz is a zip archive
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "trains on an uploaded training file that the input names",
    async () => {
      // Two clusters in 3 features, far from [-1, 1]: the example standardises them.
      const rows = Array.from({ length: 200 }, (_, i) => {
        const label = i % 2;
        const jitter = ((i * 37) % 11) / 10;
        return `${label ? 120 + jitter : 80 - jitter},${50 + jitter},${label ? -9 : 9},${label}`;
      });
      const csv = Buffer.from(`a,b,c,label\n${rows.join("\n")}\n`);
      const created = await server.fetch("/v1/uploads", {
        body: { filename: "clusters.csv", size: csv.byteLength },
      });
      expect(created.status).toBe(201);
      const put = await fetch(created.body.url, {
        method: created.body.method,
        headers: created.body.headers,
        body: csv,
      });
      expect(put.ok).toBe(true);

      const sub = await server.submit("finetune", {
        input: {
          epochs: 2,
          stepsPerEpoch: 200,
          batchSize: 32,
          hiddenUnits: 16,
          trainFile: "train.csv",
        },
        files: { "train.csv": created.body.id },
      });
      expect(sub.status).toBe(202);
      await server.waitForStatus(sub.body.id, "SUCCEEDED", WAIT_MS.done);
      const out = (await server.fetch(`/v1/requests/${sub.body.id}/result`)).body.output;
      const digest = createHash("sha256").update(csv).digest("hex");
      expect(out).toMatchObject({ data: `train.csv:sha256:${digest}`, examples: 200, classes: 2 });
      expect(out.accuracy).toBeGreaterThan(0.95);
    },
    WAIT_MS.done + 20_000,
  );
});
