import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  type AttemptOptions,
  type AttemptProgress,
  type LogStream,
  parseProgress,
  runAttempt,
  startAttempt,
} from "../../jobs/runner/index.ts";
import { alive, DEMO, RecordingStorage, removeDir, tempDir, waitFor } from "./helpers.ts";

let root: string;
let storage: RecordingStorage;

beforeEach(async () => {
  root = await tempDir("attempt");
  storage = new RecordingStorage(root);
});
afterEach(async () => {
  await removeDir(root);
});

interface Captured {
  lines: { line: string; stream: LogStream }[];
  progress: AttemptProgress[];
  order: string[];
}

/** Options for running `command` with everything a test looks at captured. */
function options(
  command: string[],
  input: unknown,
  extra: Partial<AttemptOptions> = {},
): AttemptOptions & { captured: Captured } {
  const captured: Captured = { lines: [], progress: [], order: [] };
  return {
    command,
    job: { requestId: "req_test", queue: "demo", attempt: 1 },
    workDir: join(root, "work", String(extra.job?.attempt ?? 1)),
    input,
    storage,
    timeoutSeconds: 30,
    cancelGraceSeconds: 5,
    pollIntervalMs: 25,
    logSink: (line, stream) => captured.lines.push({ line, stream }),
    onProgress: (p) => {
      captured.progress.push(p);
      captured.order.push(`progress:${p.current}`);
      storage.calls.push(`progress:${p.current}`);
    },
    captured,
    ...extra,
  };
}

const demo = (input: unknown, extra: Partial<AttemptOptions> = {}) =>
  options([process.execPath, DEMO], input, extra);
const script = (source: string, extra: Partial<AttemptOptions> = {}) =>
  options([process.execPath, "-e", source], null, extra);

describe("runAttempt with the demo job", () => {
  it("succeeds, reports each progress change after saving the checkpoint, and saves outputs", async () => {
    const opts = demo({ steps: 3, sleepMs: 60, output: { hello: "world" }, artifactBytes: 10 });

    const result = await runAttempt(opts);

    expect(result).toMatchObject({ outcome: "succeeded", exitCode: 0, signal: null });
    // Polling may merge changes that land between two polls (a loaded machine), never reorder them.
    const currents = opts.captured.progress.map((p) => p.current);
    expect(currents.length).toBeGreaterThanOrEqual(2);
    expect(currents).toEqual([...currents].sort());
    expect(opts.captured.progress.at(-1)).toEqual({ current: 3, total: 3, message: "step 3/3" });
    // Each progress report comes after the save of the checkpoint that it describes.
    for (const n of currents) {
      const report = storage.calls.indexOf(`progress:${n}`);
      const save = storage.calls.indexOf(`checkpoint:{"step":${n}}`);
      expect(save).toBeGreaterThanOrEqual(0);
      expect(save).toBeLessThan(report);
    }
    // The last save holds the last step (at exit it is skipped when the folder has not
    // changed since), and outputs are saved once, after the last report.
    expect(storage.savedStates.at(-1)).toBe('{"step":3}');
    expect(storage.calls.filter((c) => c === "outputs")).toHaveLength(1);
    expect(storage.calls.indexOf("outputs")).toBeGreaterThan(storage.calls.indexOf("progress:3"));
    expect(await storage.outputFiles()).toEqual(["artifact.bin", "result.json"]);
    const output = JSON.parse(await readFile(join(storage.outputs, "result.json"), "utf8"));
    expect(output).toEqual({ steps: 3, resumedFrom: 0, attempt: 1, output: { hello: "world" } });
  });

  it("captures stdout and stderr line by line", async () => {
    const opts = demo({ steps: 2, sleepMs: 10 });

    await runAttempt(opts);

    // Each stream keeps its order; across the two pipes the order is not defined.
    const of = (stream: LogStream) =>
      opts.captured.lines.filter((l) => l.stream === stream).map((l) => l.line);
    expect(of("stderr")).toEqual(["demo: attempt 1 starting at step 0 of 2"]);
    expect(of("stdout")).toEqual([
      "demo: step 1/2",
      "demo: step 2/2",
      "demo: done, 2 steps (resumed from 0)",
    ]);
    expect(opts.captured.lines.at(-1)).toEqual({
      line: "[longrun] job exited with code 0",
      stream: "runner",
    });
  });

  it("resumes a retry from the checkpoint the failed attempt left", async () => {
    const input = { steps: 4, sleepMs: 10, fail: "first-attempt" };

    const first = await runAttempt(demo(input));
    const second = await runAttempt(
      demo(input, { job: { requestId: "req_test", queue: "demo", attempt: 2 } }),
    );

    expect(first.outcome).toBe("failed");
    expect(first.exitCode).toBe(1);
    expect(first.message).toContain("exited with code 1");
    expect(first.message).toContain("failing on purpose at step 2");
    expect(second.outcome).toBe("succeeded");
    const output = JSON.parse(await readFile(join(storage.outputs, "result.json"), "utf8"));
    expect(output).toEqual({ steps: 4, resumedFrom: 2, attempt: 2 });
  });

  it("stops the job with SIGTERM, which it answers by checkpointing and exiting", async () => {
    const opts = demo({ steps: 1000, sleepMs: 20 });
    const handle = startAttempt(opts);
    await waitFor(() => opts.captured.progress.length >= 2, 10_000, "two progress reports");

    handle.stop("cancel");
    const result = await handle.done;

    expect(result).toMatchObject({ outcome: "stopped", exitCode: 143, stopReason: "cancel" });
    const sigtermLine = opts.captured.lines.find((l) => l.line.includes("got SIGTERM at step"));
    expect(sigtermLine).toBeDefined();
    const stepAtSigterm = Number(/step (\d+)/.exec(sigtermLine?.line ?? "")?.[1]);
    // The save at exit holds what the job wrote on SIGTERM.
    expect(storage.savedStates.at(-1)).toBe(JSON.stringify({ step: stepAtSigterm }));
    expect(storage.calls).not.toContain("outputs");
  });

  it("kills a job that ignores SIGTERM once the grace period is over", async () => {
    const opts = demo(
      { steps: 1000, sleepMs: 20, ignoreSigterm: true },
      { cancelGraceSeconds: 0.3 },
    );
    const handle = startAttempt(opts);
    const { pid } = await handle.started;
    await waitFor(() => opts.captured.progress.length >= 1, 10_000, "first progress");

    const t0 = Date.now();
    handle.stop("shutdown");
    const result = await handle.done;

    expect(result).toMatchObject({ outcome: "stopped", signal: "SIGKILL", exitCode: null });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(opts.captured.lines.some((l) => l.line === "demo: got SIGTERM, ignoring it")).toBe(true);
    expect(await alive(pid)).toBe(false);
    // Even a killed job's checkpoint folder is saved at exit.
    expect(storage.savedStates.at(-1)).toMatch(/^\{"step":\d+\}$/);
  });

  it("ends as timeout when the attempt runs longer than timeoutSeconds", async () => {
    const opts = demo({ steps: 1000, sleepMs: 20 }, { timeoutSeconds: 0.4 });

    const result = await runAttempt(opts);

    expect(result).toMatchObject({ outcome: "timeout", exitCode: 143, stopReason: "timeout" });
    expect(result.message).toContain("ran longer than 0.4s");
  });

  it("reports an external stop for reason timeout as a timeout", async () => {
    const opts = demo({ steps: 1000, sleepMs: 20 });
    const handle = startAttempt(opts);
    await handle.started;

    handle.stop("timeout");

    expect((await handle.done).outcome).toBe("timeout");
  });

  it("fails with the exit code when the job exits non-zero", async () => {
    const result = await runAttempt(demo({ steps: 2, sleepMs: 5, fail: "always", exitCode: 7 }));

    expect(result).toMatchObject({ outcome: "failed", exitCode: 7 });
    expect(result.message).toMatch(/^job exited with code 7: demo: failing on purpose/);
    expect(storage.calls).not.toContain("outputs");
  });

  it("fails naming the signal when the job is killed by one it did not expect", async () => {
    const result = await runAttempt(script("process.kill(process.pid, 'SIGSEGV')"));

    expect(result).toMatchObject({ outcome: "failed", signal: "SIGSEGV", exitCode: null });
    expect(result.message).toContain("killed by signal SIGSEGV");
  });
});

describe("runAttempt with ad-hoc jobs", () => {
  it("fails a job that exits 0 with an invalid result.json, without saving outputs", async () => {
    const opts = script(
      "require('fs').writeFileSync(process.env.LONGRUN_OUTPUT_DIR + '/result.json', '{not json')",
    );

    const result = await runAttempt(opts);

    expect(result.outcome).toBe("failed");
    expect(result.exitCode).toBe(0);
    expect(result.message).toContain("result.json is not valid JSON");
    expect(storage.calls).not.toContain("outputs");
  });

  it("saves nested output files and succeeds without a result.json", async () => {
    const opts = script(`
      const fs = require('fs'); const d = process.env.LONGRUN_OUTPUT_DIR;
      fs.mkdirSync(d + '/sub'); fs.writeFileSync(d + '/sub/a.txt', 'x');`);

    const result = await runAttempt(opts);

    expect(result.outcome).toBe("succeeded");
    expect(await readFile(join(storage.outputs, "sub/a.txt"), "utf8")).toBe("x");
  });

  it("gives the job the contract's variables, the queue env, and not the server's secrets", async () => {
    process.env.LONGRUN_TEST_SECRET = "do-not-leak";
    const opts = script(
      `require('fs').writeFileSync(process.env.LONGRUN_OUTPUT_DIR + '/result.json',
         JSON.stringify({ env: process.env, input: require(process.env.LONGRUN_INPUT_FILE),
                          cwd: process.cwd() }))`,
      { env: { EPOCHS_DEFAULT: "4" }, input: { a: [1, 2] } },
    );

    try {
      await runAttempt(opts);
    } finally {
      delete process.env.LONGRUN_TEST_SECRET;
    }

    const seen = JSON.parse(await readFile(join(storage.outputs, "result.json"), "utf8"));
    expect(seen.input).toEqual({ a: [1, 2] });
    expect(seen.env).toMatchObject({
      LONGRUN_REQUEST_ID: "req_test",
      LONGRUN_QUEUE: "demo",
      LONGRUN_ATTEMPT: "1",
      LONGRUN_INPUT_FILE: join(opts.workDir, "input.json"),
      LONGRUN_OUTPUT_DIR: join(opts.workDir, "output"),
      LONGRUN_CHECKPOINT_DIR: join(opts.workDir, "checkpoint"),
      LONGRUN_PROGRESS_FILE: join(opts.workDir, "progress.json"),
      EPOCHS_DEFAULT: "4",
      PATH: process.env.PATH,
    });
    expect(seen.env.LONGRUN_TEST_SECRET).toBeUndefined();
    expect(seen.cwd).toBe(opts.workDir);
  });

  it("keeps a partial line until its newline, and flushes the last one at exit", async () => {
    const opts = script(`
      process.stdout.write('par');
      setTimeout(() => process.stdout.write('tial\\nsecond\\r\\nlast'), 100);`);

    await runAttempt(opts);

    const stdout = opts.captured.lines.filter((l) => l.stream === "stdout").map((l) => l.line);
    expect(stdout).toEqual(["partial", "second", "last"]);
  });

  it("ignores a progress file that is not valid JSON yet", async () => {
    const opts = script(`
      const fs = require('fs'); const f = process.env.LONGRUN_PROGRESS_FILE;
      fs.writeFileSync(f, '{"current": 1, "to');
      setTimeout(() => fs.writeFileSync(f, '{"current": 2, "message": "ok"}'), 200);
      setTimeout(() => {}, 400);`);

    await runAttempt(opts);

    expect(opts.captured.progress).toEqual([{ current: 2, total: null, message: "ok" }]);
  });

  it("rejects `started` and fails when the command cannot be spawned", async () => {
    const opts = options([join(root, "no-such-program")], null);

    const handle = startAttempt(opts);

    await expect(handle.started).rejects.toThrow(/could not start .*ENOENT/);
    const result = await handle.done;
    expect(result).toMatchObject({ outcome: "failed", exitCode: null });
    expect(result.message).toContain("ENOENT");
  });

  it("stops every process of the job's group, not just the one it spawned", async () => {
    const opts = script(`
      const c = require('child_process').spawn('sleep', ['30'], { stdio: 'ignore' });
      console.log('child ' + c.pid);
      setInterval(() => {}, 1000);`);
    const handle = startAttempt(opts);
    await waitFor(() => opts.captured.lines.some((l) => l.line.startsWith("child ")));
    const childPid = Number(
      opts.captured.lines.find((l) => l.line.startsWith("child "))?.line.slice(6),
    );

    handle.stop("cancel");
    await handle.done;

    await waitFor(async () => !(await alive(childPid)), 3000, "the grandchild to die");
  });
});

describe("parseProgress", () => {
  it("accepts current with optional total and message and rejects anything else", () => {
    expect(parseProgress('{"current": 2, "total": 5, "message": "m"}')).toEqual({
      current: 2,
      total: 5,
      message: "m",
    });
    expect(parseProgress('{"current": 0.5}')).toEqual({ current: 0.5, total: null, message: null });
    expect(parseProgress('{"total": 5}')).toBeNull();
    expect(parseProgress('{"current": "2"}')).toBeNull();
    expect(parseProgress("[1]")).toBeNull();
    expect(parseProgress("")).toBeNull();
  });
});

describe("startAttempt with a relative work dir", () => {
  it("hands the job absolute paths, since it runs inside the work dir", async () => {
    const rel = join("node_modules", ".cache", `longrun-rel-${process.pid}-${Date.now()}`);
    const opts = script(
      `const fs = require('fs');
       fs.writeFileSync(process.env.LONGRUN_OUTPUT_DIR + '/result.json',
         JSON.stringify(fs.readFileSync(process.env.LONGRUN_INPUT_FILE, 'utf8')))`,
      { workDir: rel, input: { x: 1 } },
    );

    try {
      const result = await runAttempt(opts);

      expect(result.outcome).toBe("succeeded");
      const seen = JSON.parse(await readFile(join(storage.outputs, "result.json"), "utf8"));
      expect(JSON.parse(seen)).toEqual({ x: 1 });
    } finally {
      await removeDir(rel);
    }
  });
});

/** A job prelude: its checkpoint file, and `whenGo(fn)` to run fn once the test writes ./go. */
const JOB_PRELUDE = `
  const fs = require('fs'); const e = process.env;
  const state = e.LONGRUN_CHECKPOINT_DIR + '/state.json';
  const progress = (n) => fs.writeFileSync(e.LONGRUN_PROGRESS_FILE, JSON.stringify({ current: n }));
  const whenGo = (fn) => { const t = setInterval(() => {
    if (fs.existsSync('go')) { clearInterval(t); fn(); } }, 10); };
`;

const checkpointSaves = () => storage.calls.filter((c) => c.startsWith("checkpoint:"));

describe("checkpoint saves", () => {
  it("saves nothing for an empty checkpoint folder when nothing was restored", async () => {
    const opts = script(`${JOB_PRELUDE}
      progress(1);
      setTimeout(() => progress(2), 150);
      setTimeout(() => {}, 300);`);

    const result = await runAttempt(opts);

    expect(result.outcome).toBe("succeeded");
    expect(opts.captured.progress.at(-1)?.current).toBe(2);
    expect(checkpointSaves()).toEqual([]);
    expect(storage.calls[0]).toBe("restore");
    expect(storage.calls.at(-1)).toBe("outputs");
  });

  it("skips the save at exit when the folder has not changed since the last save", async () => {
    // The checkpoint is older than the progress report by far more than a timestamp tick,
    // so the save that follows the report can vouch for it.
    const opts = script(`${JOB_PRELUDE}
      fs.writeFileSync(state + '.tmp', '{"step":1}'); fs.renameSync(state + '.tmp', state);
      setTimeout(() => progress(1), 100);
      whenGo(() => {});`);
    const handle = startAttempt(opts);
    await waitFor(() => storage.savedStates.includes('{"step":1}'), 10_000, "the save of step 1");

    await writeFile(join(opts.workDir, "go"), "");
    const result = await handle.done;

    expect(result.outcome).toBe("succeeded");
    expect(checkpointSaves()).toEqual(['checkpoint:{"step":1}']);
  });

  it("saves a checkpoint written right before exit", async () => {
    const opts = script(`${JOB_PRELUDE}
      fs.writeFileSync(state, '{"step":1}');
      progress(1);
      whenGo(() => {
        fs.writeFileSync(state + '.tmp', '{"step":2}'); fs.renameSync(state + '.tmp', state);
        process.exit(3);
      });`);
    const handle = startAttempt(opts);
    await waitFor(() => storage.savedStates.includes('{"step":1}'), 10_000, "the save of step 1");

    await writeFile(join(opts.workDir, "go"), "");
    const result = await handle.done;

    expect(result).toMatchObject({ outcome: "failed", exitCode: 3 });
    expect(storage.savedStates.at(-1)).toBe('{"step":2}');
  });

  it("saves a checkpoint rewritten in place with the same size since the last save", async () => {
    // Rewritten well before exit, so only its timestamps tell the folder changed.
    const opts = script(`${JOB_PRELUDE}
      fs.writeFileSync(state, '{"step":1}');
      setTimeout(() => progress(1), 100);
      whenGo(() => { fs.writeFileSync(state, '{"step":2}'); setTimeout(() => {}, 150); });`);
    const handle = startAttempt(opts);
    await waitFor(() => storage.savedStates.includes('{"step":1}'), 10_000, "the save of step 1");

    await writeFile(join(opts.workDir, "go"), "");
    await handle.done;

    expect(storage.savedStates.at(-1)).toBe('{"step":2}');
  });

  it("saves the folder a job emptied after an earlier save", async () => {
    const opts = script(`${JOB_PRELUDE}
      fs.writeFileSync(state, '{"step":1}');
      progress(1);
      whenGo(() => { fs.rmSync(state); process.exit(1); });`);
    const handle = startAttempt(opts);
    await waitFor(() => storage.savedStates.includes('{"step":1}'), 10_000, "the save of step 1");

    await writeFile(join(opts.workDir, "go"), "");
    await handle.done;

    expect(storage.savedStates.at(-1)).toBe("-");
    expect(await readdir(storage.checkpoint)).toEqual([]);
  });

  it("saves at exit a restored checkpoint it cannot vouch for, unchanged or not", async () => {
    await runAttempt(script(`${JOB_PRELUDE} fs.writeFileSync(state, '{"step":7}');`));
    storage.calls.length = 0;

    const second = script(`${JOB_PRELUDE}
      console.log('restored ' + fs.readFileSync(state, 'utf8'));`);
    await runAttempt(second);

    expect(second.captured.lines.map((l) => l.line)).toContain('restored {"step":7}');
    expect(checkpointSaves()).toEqual(['checkpoint:{"step":7}']);
  });
});
