import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKENDS, ROOT, TestServer } from "../helpers/server.ts";

/** The numpy fine-tuning example end to end, including a server SIGKILL mid-training. */
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

  it("trains, survives a server kill, resumes from its checkpoint and returns metrics and weights", async () => {
    const sub = await server.submit("finetune", {
      input: { epochs: 6, learningRate: 0.5, seed: 7 },
    });
    expect(sub.status).toBe(202);
    const mid = await server.waitFor(sub.body.id, (r) => (r.progress?.current ?? 0) >= 2, {
      timeoutMs: 60_000,
    });
    expect(mid.progress.total).toBe(6);
    await server.kill("SIGKILL");
    await server.start();
    const done = await server.waitForStatus(sub.body.id, "SUCCEEDED", 120_000);
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
  });

  it("trains on an uploaded training file that the input names", async () => {
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
    await server.waitForStatus(sub.body.id, "SUCCEEDED", 120_000);
    const out = (await server.fetch(`/v1/requests/${sub.body.id}/result`)).body.output;
    const digest = createHash("sha256").update(csv).digest("hex");
    expect(out).toMatchObject({ data: `train.csv:sha256:${digest}`, examples: 200, classes: 2 });
    expect(out.accuracy).toBeGreaterThan(0.95);
  });
});
