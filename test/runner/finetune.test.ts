import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  FsAttemptStorage,
  FsLayout,
  FsResultStore,
} from "../../functions/adapters/embedded/fs-storage.ts";
import { type AttemptProgress, runAttempt, startAttempt } from "../../jobs/runner/index.ts";
import { FINETUNE, removeDir, tempDir, waitFor } from "./helpers.ts";

let dataDir: string;
let layout: FsLayout;

beforeEach(async () => {
  dataDir = await tempDir("finetune");
  layout = new FsLayout(dataDir);
});
afterEach(async () => {
  await removeDir(dataDir);
});

const input = { epochs: 2, stepsPerEpoch: 1500, seed: 7 };

function attempt(requestId: string, n: number, onProgress?: (p: AttemptProgress) => void) {
  return {
    command: ["python3", FINETUNE],
    job: { requestId, queue: "finetune", attempt: n },
    workDir: layout.workDir(requestId, n),
    input,
    storage: new FsAttemptStorage(layout, requestId),
    timeoutSeconds: 60,
    cancelGraceSeconds: 10,
    pollIntervalMs: 25,
    ...(onProgress ? { onProgress } : {}),
  };
}

interface TrainResult {
  loss: number;
  accuracy: number;
  epochs: number;
  resumedFromEpoch: number;
  attempt: number;
}

describe("finetune train.py under the runner", () => {
  it("resumes after SIGTERM from its checkpoint and ends where an uninterrupted run ends", async () => {
    const results = new FsResultStore(layout, (id, name) => `${id}/${name}`);
    const progress: AttemptProgress[] = [];
    // The uninterrupted run goes alongside, to keep the test short.
    const straightRun = runAttempt(attempt("req_ft_straight", 1));
    const first = startAttempt(attempt("req_ft_resumed", 1, (p) => progress.push(p)));
    await waitFor(() => progress.length >= 1, 30_000, "the first epoch");

    first.stop("cancel");
    const stopped = await first.done;
    const resumed = await runAttempt(attempt("req_ft_resumed", 2));
    const straight = await straightRun;

    expect(progress[0]).toMatchObject({ current: 1, total: 2 });
    expect(progress[0]?.message).toMatch(/^epoch 1\/2 loss=\d+\.\d+ acc=\d\.\d+$/);
    expect(stopped).toMatchObject({ outcome: "stopped", exitCode: 143 });
    expect(resumed.outcome).toBe("succeeded");
    expect(straight.outcome).toBe("succeeded");
    const a = await results.getResult("req_ft_resumed");
    const b = await results.getResult("req_ft_straight");
    const outA = a.output as TrainResult;
    const outB = b.output as TrainResult;
    expect(outA).toMatchObject({ epochs: 2, attempt: 2, resumedFromEpoch: 1 });
    expect(outB).toMatchObject({ epochs: 2, attempt: 1, resumedFromEpoch: 0 });
    // The sampler's RNG state is in the checkpoint, so resuming replays the same batches.
    expect(outA.loss).toBeCloseTo(outB.loss, 10);
    expect(outA.accuracy).toBeGreaterThan(0.9);
    expect(a.artifacts.map((x) => x.name)).toEqual(["model.npz"]);
    expect(a.artifacts[0]?.size).toBeGreaterThan(1000);
  });
});
