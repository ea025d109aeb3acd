/**
 * Bench items 6.2 and 6.3 (issue 6): how quickly the embedded engine starts jobs, and how it
 * drains a deep queue. Both run the real server (`node --import tsx functions/local/main.ts`,
 * through {@link TestServer}) and compare it with the same job command spawned by a plain
 * `node` process ({@link BareSpawner}) the way the runner spawns it (`detached`, piped stdio).
 *
 * - `start`: time to start (submit → job process running, a slot free) and slot refill
 *   (job exit → next queued job running, maxRunning=1), p50/p99. The job writes wall-clock
 *   marks (`date +%s%N`) when it starts and right before it exits, so both ends of every
 *   interval are taken by the same clock the floor's marks are.
 * - `dispatchScale`: thousands of requests seeded as QUEUED (through the real submit use case
 *   on the server's SQLite file, before it starts) across priorities 0–9, drained through
 *   maxRunning=50 with an instant job: time, server memory, start order, exactly-once.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { monotonicFactory } from "ulidx";
import { SqliteRequestStore } from "../functions/adapters/embedded/sqlite-store.ts";
import { JOB_ENV } from "../functions/config/env.ts";
import { loadConfigFile } from "../functions/config/load.ts";
import type { RequestRecord } from "../functions/core/request.ts";
import { submitRequest } from "../functions/core/usecases/submit.ts";
import { baseJobEnv } from "../jobs/runner/attempt.ts";
import { decodeJobRef } from "../jobs/runner/process-group.ts";
import { TestServer } from "../test/helpers/server.ts";
import type { BenchSection, SummaryRow } from "./section.ts";
import { type Distribution, distribution, ms, ratioText } from "./stats.ts";

/** The server's own sweep default (functions/local/env.ts), not TestServer's 200 ms. */
const SWEEP_INTERVAL_MS = 1000;
/** The runner's progress-poll default (jobs/runner/attempt.ts, LocalProcessCompute). */
const PROGRESS_POLL_MS = 250;

// ---------------------------------------------------------------------------------------
// Clocks, marks and processes

/** Wall-clock milliseconds with sub-millisecond precision (comparable to `date +%s%N`). */
function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A `date +%s%N` mark file as wall-clock milliseconds (microsecond precision). */
async function readMark(path: string): Promise<number> {
  const text = (await readFile(path, "utf8")).trim();
  if (!/^[0-9]{19}$/.test(text)) throw new Error(`bad mark ${JSON.stringify(text)} in ${path}`);
  return Number(BigInt(text) / 1000n) / 1000;
}

async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${path}`);
    await sleep(1);
  }
}

/** The environment the runner gives a job (jobs/runner/attempt.ts), for bare spawns. */
function bareJobEnv(id: string, queueEnv: Record<string, string>, cwd: string) {
  return {
    ...baseJobEnv(),
    ...queueEnv,
    [JOB_ENV.requestId]: id,
    [JOB_ENV.queue]: "bare",
    [JOB_ENV.attempt]: "1",
    [JOB_ENV.inputFile]: join(cwd, "input.json"),
    [JOB_ENV.outputDir]: join(cwd, "output"),
    [JOB_ENV.checkpointDir]: join(cwd, "checkpoint"),
    [JOB_ENV.progressFile]: join(cwd, "progress.json"),
  };
}

/**
 * The floor's spawner: a plain `node` process (no tsx, nothing loaded, so the smallest heap a
 * node process forks from) that spawns the job command as the runner does (own process
 * group, stdout/stderr piped and read, the runner's environment) on request, over JSON lines
 * on stdin/stdout. Ops: `one` (spawn, wait for exit; returns the spawn call's wall time),
 * `chain` (each child spawned on the previous one's `exit` event), `pool` (`n` children,
 * `width` at a time; returns first spawn → last exit), `memory`.
 */
const SPAWNER = String.raw`
const { spawn } = require("node:child_process");
const readline = require("node:readline");
const now = () => performance.timeOrigin + performance.now();
const [program, ...args] = JSON.parse(process.env.BARE_COMMAND);
const baseEnv = JSON.parse(process.env.BARE_ENV);
const cwd = process.env.BARE_CWD;
const run = (id) =>
  new Promise((resolve, reject) => {
    const env = { ...baseEnv, LONGRUN_REQUEST_ID: id };
    const t0 = now();
    const child = spawn(program, args, { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.resume();
    child.stderr.resume();
    child.once("error", reject);
    child.once("exit", (code) => resolve({ t0, code }));
  });
const ops = {
  one: (m) => run(m.id),
  chain: async (m) => {
    let failed = 0;
    for (const id of m.ids) if ((await run(id)).code !== 0) failed++;
    return { failed };
  },
  pool: async (m) => {
    let next = 0;
    let failed = 0;
    const t0 = now();
    const worker = async () => {
      while (next < m.n) if ((await run(m.prefix + next++)).code !== 0) failed++;
    };
    await Promise.all(Array.from({ length: m.width }, worker));
    return { ms: now() - t0, failed };
  },
  memory: async () => ({ rssMiB: process.memoryUsage().rss / 1048576 }),
};
readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const m = JSON.parse(line);
  try {
    process.stdout.write(JSON.stringify({ ok: true, ...(await ops[m.op](m)) }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e) }) + "\n");
  }
});
`;

class BareSpawner {
  readonly #child: ChildProcess;
  readonly #waiting: Array<(line: string) => void> = [];

  constructor(command: readonly string[], queueEnv: Record<string, string>, cwd: string) {
    this.#child = spawn(process.execPath, ["-e", SPAWNER], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        BARE_COMMAND: JSON.stringify(command),
        BARE_ENV: JSON.stringify(bareJobEnv("", queueEnv, cwd)),
        BARE_CWD: cwd,
      },
      stdio: ["pipe", "pipe", "inherit"],
    });
    createInterface({ input: this.#child.stdout as Readable }).on("line", (line) =>
      this.#waiting.shift()?.(line),
    );
  }

  /** One op at a time: resolves with the spawner's answer. */
  async #ask<T>(message: Record<string, unknown>): Promise<T> {
    const answer = new Promise<string>((resolve) => this.#waiting.push(resolve));
    this.#child.stdin?.write(`${JSON.stringify(message)}\n`);
    const reply = JSON.parse(await answer) as { ok: boolean; error?: string } & T;
    if (!reply.ok) throw new Error(`bare spawner: ${reply.error}`);
    return reply;
  }

  /** Spawns one job and waits for its exit; the wall-clock time of the spawn call. */
  async one(id: string): Promise<number> {
    const { t0, code } = await this.#ask<{ t0: number; code: number | null }>({ op: "one", id });
    if (code !== 0) throw new Error(`bare job ${id} exited ${code}`);
    return t0;
  }

  async chain(ids: readonly string[]): Promise<void> {
    const { failed } = await this.#ask<{ failed: number }>({ op: "chain", ids });
    if (failed > 0) throw new Error(`${failed} bare jobs failed`);
  }

  async pool(n: number, width: number, prefix: string): Promise<number> {
    const r = await this.#ask<{ ms: number; failed: number }>({ op: "pool", n, width, prefix });
    if (r.failed > 0) throw new Error(`${r.failed} bare jobs failed`);
    return r.ms;
  }

  async rssMiB(): Promise<number> {
    return (await this.#ask<{ rssMiB: number }>({ op: "memory" })).rssMiB;
  }

  async close(): Promise<void> {
    const child = this.#child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = once(child, "exit");
    child.stdin?.end();
    child.kill();
    await gone;
  }
}

/** `VmHWM` / `VmRSS` of a process in MiB, from /proc/<pid>/status. */
function memoryOf(pid: number): { peakMiB: number; rssMiB: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  return { peakMiB: kb("VmHWM") / 1024, rssMiB: kb("VmRSS") / 1024 };
}

let clockTicks: number | undefined;
/** User + system CPU seconds a process has used so far, from /proc/<pid>/stat. */
function cpuSecondsOf(pid: number): number {
  clockTicks ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // Fields 14 (utime) and 15 (stime); fields[0] is field 3.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

function serverPid(server: TestServer): number {
  const pid = server.pid;
  if (pid === undefined) throw new Error("the server is not running");
  return pid;
}

async function queueCounts(server: TestServer, queue: string) {
  const res = await server.fetch(`/v1/queues/${queue}`);
  if (res.status !== 200) throw new Error(`GET /v1/queues/${queue}: ${res.status}`);
  return res.body as { queued: number; running: number };
}

async function waitQueueIdle(server: TestServer, queue: string, timeoutMs: number, pollMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const c = await queueCounts(server, queue);
    if (c.queued === 0 && c.running === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`queue ${queue} not drained in ${timeoutMs} ms: ${JSON.stringify(c)}`);
    }
    await sleep(pollMs);
  }
}

const round = (x: number, digits = 3) => Number(x.toFixed(digits));
const roundDist = (d: Distribution) =>
  Object.fromEntries(Object.entries(d).map(([k, v]) => [k, round(v)])) as unknown as Distribution;

// ---------------------------------------------------------------------------------------
// Section `start`: time to start and slot refill

/**
 * Writes a start mark, waits while `$BENCH_MARKS/hold` exists (a builtin test, no process),
 * writes an end mark and exits. `date` is the only process it forks besides itself.
 */
const MARK_JOB = `#!/bin/sh
date +%s%N > "$BENCH_MARKS/$LONGRUN_REQUEST_ID.start"
while [ -e "$BENCH_MARKS/hold" ]; do sleep 0.02; done
date +%s%N > "$BENCH_MARKS/$LONGRUN_REQUEST_ID.end"
`;

interface StartSample {
  /** submit sent → job's start mark */
  toStart: number;
  /** submit sent → 202 received */
  accepted: number;
  /** createdAt → startedAt as the store recorded them (1 ms resolution) */
  createdToStarted: number;
  /** startedAt (the runner saw the process spawned) → the job's start mark */
  startedToMark: number;
  /** The floor's sample taken right after this one: spawn call → start mark. */
  floor: number;
}

const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"];

/** Polls a request until it is terminal; throws unless it SUCCEEDED. */
async function waitSucceeded(server: TestServer, id: string, pollMs: number) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = (await server.fetch(`/v1/requests/${id}`)).body as {
      status: string;
      createdAt: string;
      startedAt: string | null;
      finishedAt: string | null;
    };
    if (TERMINAL.includes(r.status)) {
      if (r.status !== "SUCCEEDED") throw new Error(`${id} ended ${r.status}`);
      return r;
    }
    if (Date.now() > deadline) throw new Error(`${id} did not finish: ${JSON.stringify(r)}`);
    await sleep(pollMs);
  }
}

/**
 * Time to start, one request at a time (the next is submitted only once the last one has
 * finished), each sample followed by a floor sample: the same command spawned bare, spawn
 * call → start mark. Interleaving them lets both see the same machine load.
 */
async function measureTimeToStart(
  server: TestServer,
  bare: BareSpawner,
  marks: string,
  n: number,
  warmup: number,
): Promise<StartSample[]> {
  const samples: StartSample[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = wallNow();
    const res = await server.submit("start", { input: { i } });
    const t1 = wallNow();
    if (res.status !== 202) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
    const id = res.body.id as string;
    await waitForFile(join(marks, `${id}.end`), 20_000);
    const r = await waitSucceeded(server, id, 2);

    const bareId = `bare-start-${i}`;
    const t2 = await bare.one(bareId);
    if (i < warmup) continue;
    const start = await readMark(join(marks, `${id}.start`));
    const startedAt = Date.parse(r.startedAt ?? "");
    samples.push({
      toStart: start - t0,
      accepted: t1 - t0,
      createdToStarted: startedAt - Date.parse(r.createdAt),
      startedToMark: start - startedAt,
      floor: (await readMark(join(marks, `${bareId}.start`))) - t2,
    });
  }
  return samples;
}

interface RefillGap {
  /** job k's end mark → job k+1's start mark */
  gap: number;
  /** job k's end mark → its finishedAt (the runner's work after exit: checkpoint, outputs, clean-up) */
  endToFinished: number;
  /** job k's finishedAt → job k+1's startedAt (record the exit, wake, claim, work dir, spawn) */
  finishedToStarted: number;
  /** job k+1's startedAt → its start mark (exec of the shell, `date`) */
  startedToMark: number;
}

/** maxRunning=1, n+1 requests queued at once: each job's end mark → the next one's start. */
async function measureRefill(
  server: TestServer,
  marks: string,
  n: number,
): Promise<{ gaps: RefillGap[]; fifo: boolean }> {
  const hold = join(marks, "hold");
  await writeFile(hold, "");
  const ids: string[] = [];
  for (let i = 0; i <= n; i++) {
    const res = await server.submit("refill", { input: { i } });
    if (res.status !== 202) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
    ids.push(res.body.id as string);
  }
  // The first request holds the only slot until `hold` goes; every other one waits QUEUED.
  await waitForFile(join(marks, `${ids[0]}.start`), 20_000);
  const before = await queueCounts(server, "refill");
  if (before.queued !== n || before.running !== 1) {
    throw new Error(`refill: expected ${n} queued behind 1 running, got ${JSON.stringify(before)}`);
  }
  await rm(hold);
  await waitQueueIdle(server, "refill", 60_000);
  const listed = await server.fetch(`/v1/queues/refill/requests?limit=${n + 1}`);
  const records = new Map(
    (listed.body.items as { id: string; status: string; startedAt: string; finishedAt: string }[])
      .filter((r) => ids.includes(r.id))
      .map((r) => [r.id, r]),
  );
  const jobs = await Promise.all(
    ids.map(async (id) => {
      const r = records.get(id);
      if (r?.status !== "SUCCEEDED") throw new Error(`refill: ${id} is ${r?.status}`);
      return {
        id,
        start: await readMark(join(marks, `${id}.start`)),
        end: await readMark(join(marks, `${id}.end`)),
        startedAt: Date.parse(r.startedAt),
        finishedAt: Date.parse(r.finishedAt),
      };
    }),
  );
  const byStart = [...jobs].sort((a, b) => a.start - b.start);
  const fifo = byStart.every((j, i) => j.id === ids[i]);
  const gaps: RefillGap[] = [];
  for (let i = 1; i < byStart.length; i++) {
    const prev = byStart[i - 1];
    const next = byStart[i];
    if (!prev || !next) continue;
    gaps.push({
      gap: next.start - prev.end,
      endToFinished: prev.finishedAt - prev.end,
      finishedToStarted: next.startedAt - prev.finishedAt,
      startedToMark: next.start - next.startedAt,
    });
  }
  return { gaps, fifo };
}

/** The bare spawner starting each child on the previous child's `exit` event. */
async function floorRefill(bare: BareSpawner, marks: string, n: number): Promise<number[]> {
  const ids = Array.from({ length: n + 1 }, (_, i) => `bare-refill-${i}`);
  await bare.chain(ids);
  const gaps: number[] = [];
  for (let i = 1; i < ids.length; i++) {
    const end = await readMark(join(marks, `${ids[i - 1]}.end`));
    gaps.push((await readMark(join(marks, `${ids[i]}.start`))) - end);
  }
  return gaps;
}

function loadText(): string {
  return loadavg()
    .map((x) => x.toFixed(2))
    .join(" / ");
}

/** The load averages around a measurement, and whether other work shared the machine. */
function loadNote(before: string, after: string): string {
  const cores = availableParallelism();
  const shared = (loadavg()[0] ?? 0) > cores;
  return `Load average (1/5/15 min) before ${before}, after ${after}, on ${cores} CPUs${shared ? ": other work shared the machine, so the figures are noisier (and the server waited for a CPU part of the time)" : ""}.`;
}

export const startSection: BenchSection = {
  key: "start",
  title: "Time to start and slot refill (embedded)",
  async run(ctx) {
    const n = ctx.quick ? 50 : 200;
    const warmup = 5;
    const dir = await mkdtemp(join(tmpdir(), "longrun-bench-start-"));
    const marks = join(dir, "marks");
    const bareCwd = join(dir, "bare");
    await mkdir(marks);
    await mkdir(bareCwd);
    const script = join(dir, "mark-job.sh");
    await writeFile(script, MARK_JOB);
    await chmod(script, 0o755);
    const command = ["/bin/sh", script];
    const queueEnv = { BENCH_MARKS: marks };
    const queue = (maxRunning: number) => ({
      command,
      env: queueEnv,
      maxRunning,
      maxQueued: 10_000,
      maxAttempts: 1,
      timeoutSeconds: 120,
      cancelGraceSeconds: 1,
    });
    const server = new TestServer({
      queues: { start: queue(4), refill: queue(1) },
      env: { LONGRUN_SWEEP_INTERVAL_MS: String(SWEEP_INTERVAL_MS) },
    });
    const bare = new BareSpawner(command, queueEnv, bareCwd);
    const loadBefore = loadText();
    try {
      await server.start();
      ctx.log(`start: time to start, ${n} requests one at a time (+${warmup} warm-up)`);
      const started = await measureTimeToStart(server, bare, marks, n, warmup);
      ctx.log(`start: slot refill, ${n + 1} requests queued behind maxRunning=1`);
      const refill = await measureRefill(server, marks, n);
      const refillFloor = await floorRefill(bare, marks, n);
      const spawnerRss = await bare.rssMiB();
      const loadAfter = loadText();

      const toStart = distribution(started.map((s) => s.toStart));
      const startBare = distribution(started.map((s) => s.floor));
      const accepted = distribution(started.map((s) => s.accepted));
      const createdToStarted = distribution(started.map((s) => s.createdToStarted));
      const startedToMark = distribution(started.map((s) => s.startedToMark));
      const gaps = distribution(refill.gaps.map((g) => g.gap));
      const gapsBare = distribution(refillFloor);
      const endToFinished = distribution(refill.gaps.map((g) => g.endToFinished));
      const finishedToStarted = distribution(refill.gaps.map((g) => g.finishedToStarted));
      const refillStartedToMark = distribution(refill.gaps.map((g) => g.startedToMark));
      const pollBound = gaps.p50 >= PROGRESS_POLL_MS / 2 || gaps.p50 >= SWEEP_INTERVAL_MS / 2;
      const row = (name: string, d: Distribution, f: Distribution) =>
        `| ${name} | ${ms(d.p50)} | ${ms(d.p99)} | ${ms(d.min)} | ${ms(d.max)} | ${ms(f.p50)} | ${ms(f.p99)} | ${ratioText(d.p50, f.p50)} | ${ratioText(d.p99, f.p99)} |`;
      const part = (name: string, d: Distribution, where: string) =>
        `| ${name} | ${ms(d.p50)} | ${ms(d.p99)} | ${where} |`;

      const lines = [
        `## Time to start and slot refill (embedded, ${n} samples each, /bin/sh job)`,
        "",
        "Wall-clock intervals between this process's clock and marks the job writes with `date +%s%N` the moment it starts and right before it exits. The floor spawns the same script from a plain `node` process (no tsx, nothing loaded: the smallest heap node forks from) the way the runner does (`detached`, stdio piped, the runner's environment), in the same run (the server's jobs are forked by its job launcher, with their log file as stdout and stderr). Time to start: a request submitted over HTTP while a slot is free, the next one only after it finished; each sample is followed by a floor sample (spawn call → start mark), so both see the same load. Slot refill: maxRunning=1, all requests queued before the first may exit; the floor spawns the next child on the previous child's `exit` event." +
          (n <= 100 ? ` p99 over ${n} samples is the largest.` : ""),
        "",
        "| measure | p50 | p99 | min | max | floor p50 | floor p99 | ratio p50 | ratio p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("time to start: submit sent → job running", toStart, startBare),
        row("slot refill: job exit → next job running", gaps, gapsBare),
        "",
        "Where the time goes, from the store's timestamps (1 ms resolution: createdAt at submit, startedAt when the runner saw the process spawned, finishedAt when the `exited` event was built):",
        "",
        "| part | p50 | p99 | what runs there |",
        "|---|---:|---:|---|",
        part(
          "start: submit sent → 202 received",
          accepted,
          "HTTP, auth, validation, one SQLite transaction",
        ),
        part(
          "start: createdAt → startedAt",
          createdToStarted,
          "wake, claim transaction, work dir (a recycled one renamed into place, input.json written, checkpoint looked up), spawn request to the job launcher (record and log linked from spares, its fork, /proc read, answer over the pipe)",
        ),
        part(
          "start: startedAt → job's start mark",
          startedToMark,
          "exec of the shell, `date` (startedAt is stamped once the launcher's answer is read, so a job quick to start can beat it: min may be negative)",
        ),
        part(
          "refill: job's end mark → finishedAt",
          endToFinished,
          "launcher's exit answer (log tail read), runner after exit: progress re-read, checkpoint save unless unchanged (signature), result.json and outputs renamed into place side by side, log flush (the work dir is removed after `exited`)",
        ),
        part(
          "refill: finishedAt → next startedAt",
          finishedToStarted,
          "exit transaction, trigger.wake, claim transaction, work dir, spawn request to the job launcher",
        ),
        part(
          "refill: next startedAt → its start mark",
          refillStartedToMark,
          "exec of the shell, `date`",
        ),
        "",
        `Refill jobs started in submit order: ${refill.fifo ? "yes" : "**no**"}. Server sweep every ${SWEEP_INTERVAL_MS} ms, progress poll every ${PROGRESS_POLL_MS} ms: refill is ${pollBound ? "**of the order of a poll period: check for a timer on the exit path**" : "far below both, so event-driven (runner `close` → `exited` event → finishAttempt → trigger.wake → dispatchQueue), not waiting for a timer"}. ${loadNote(loadBefore, loadAfter)}`,
      ];
      const summary: SummaryRow[] = [
        {
          measure: "Time to start (submit → job running, free slot), p50",
          value: ms(toStart.p50),
          floor: ms(startBare.p50),
          ratio: ratioText(toStart.p50, startBare.p50),
        },
        {
          measure: "Time to start, p99",
          value: ms(toStart.p99),
          floor: ms(startBare.p99),
          ratio: ratioText(toStart.p99, startBare.p99),
        },
        {
          measure: "Slot refill (job exit → next queued job running), p50",
          value: ms(gaps.p50),
          floor: ms(gapsBare.p50),
          ratio: ratioText(gaps.p50, gapsBare.p50),
        },
        {
          measure: "Slot refill, p99",
          value: ms(gaps.p99),
          floor: ms(gapsBare.p99),
          ratio: ratioText(gaps.p99, gapsBare.p99),
        },
      ];
      return {
        markdown: lines.join("\n"),
        json: {
          samples: n,
          warmup,
          sweepIntervalMs: SWEEP_INTERVAL_MS,
          progressPollMs: PROGRESS_POLL_MS,
          loadAverage: { before: loadBefore, after: loadAfter },
          timeToStartMs: roundDist(toStart),
          timeToStartFloorMs: roundDist(startBare),
          submitAcceptedMs: roundDist(accepted),
          storeCreatedToStartedMs: roundDist(createdToStarted),
          startedToStartMarkMs: roundDist(startedToMark),
          refillMs: roundDist(gaps),
          refillFloorMs: roundDist(gapsBare),
          refillEndMarkToFinishedMs: roundDist(endToFinished),
          refillFinishedToNextStartedMs: roundDist(finishedToStarted),
          refillStartedToStartMarkMs: roundDist(refillStartedToMark),
          refillFifo: refill.fifo,
          floorSpawnerRssMiB: round(spawnerRss, 1),
        },
        summary,
      };
    } finally {
      await bare.close();
      await server.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  },
};

// ---------------------------------------------------------------------------------------
// Section `dispatchScale`: draining a deep queue

/** An instant job that leaves one line per run: its request id and its pid (no fork). */
const RUN_JOB = `#!/bin/sh
echo "$LONGRUN_REQUEST_ID $$" >> "$BENCH_RUNS"
`;

const PRIORITIES = 10;
const SCALE_RUNNING = 50;

/** Counts lines per id in a runs file: how many ids ran, and how many ran more than once. */
async function countRuns(file: string): Promise<{ lines: number; ids: Map<string, number> }> {
  const text = existsSync(file) ? await readFile(file, "utf8") : "";
  const ids = new Map<string, number>();
  let lines = 0;
  for (const line of text.split("\n")) {
    if (!line) continue;
    lines++;
    const id = line.split(" ")[0] ?? "";
    ids.set(id, (ids.get(id) ?? 0) + 1);
  }
  return { lines, ids };
}

interface OrderReport {
  /** Pairs where a lower-priority request started before a higher-priority one. */
  priorityInversions: number;
  /** Pairs of equal priority where the later-submitted one started first. */
  fifoInversions: number;
  /** Largest |actual start index − expected index|. */
  maxDisplacement: number;
  /** Requests whose startedAt equalled the previous one's (ordered by pid instead). */
  tiesByPid: number;
}

/**
 * Start order from the store: `startedAt` is stamped when the runner reports the process
 * spawned; the embedded trigger runs up to 4 dispatch passes side by side, whose launches
 * reach the job launcher in claim order and are answered in that order, so startedAt is
 * non-decreasing in claim order (an inversion here would show it is not); requests within one
 * millisecond are ordered by pid (from jobRef), which the kernel hands out in spawn order
 * (unwrapped at pid_max). Expected order: priority descending, then createdAt, then id.
 */
function checkOrder(records: RequestRecord[]): OrderReport {
  let pidMax = 4_194_304;
  try {
    pidMax = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8").trim()) || pidMax;
  } catch {
    // not Linux: keep the default
  }
  const withPid = records.map((r) => ({
    r,
    startedAt: r.startedAt ?? Number.POSITIVE_INFINITY,
    pid: r.jobRef ? (decodeJobRef(r.jobRef)?.pid ?? 0) : 0,
  }));
  withPid.sort((a, b) => a.startedAt - b.startedAt);
  // Within one millisecond, unwrap pids that crossed pid_max, then order by pid.
  const actual: typeof withPid = [];
  let tiesByPid = 0;
  for (let i = 0; i < withPid.length; ) {
    let j = i;
    while (j < withPid.length && withPid[j]?.startedAt === withPid[i]?.startedAt) j++;
    const group = withPid.slice(i, j);
    tiesByPid += group.length - 1;
    const pids = group.map((g) => g.pid);
    const wrapped = Math.max(...pids) - Math.min(...pids) > pidMax / 2;
    const key = (p: number) => (wrapped && p < pidMax / 2 ? p + pidMax : p);
    group.sort((a, b) => key(a.pid) - key(b.pid));
    actual.push(...group);
    i = j;
  }
  const expected = [...records].sort(
    (a, b) =>
      b.priority - a.priority ||
      a.createdAt - b.createdAt ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  const rank = new Map(expected.map((r, i) => [r.id, i]));
  const seenByPriority = new Array<number>(PRIORITIES).fill(0);
  const ranksByPriority: number[][] = Array.from({ length: PRIORITIES }, () => []);
  let priorityInversions = 0;
  let maxDisplacement = 0;
  actual.forEach(({ r }, i) => {
    for (let p = 0; p < r.priority; p++) priorityInversions += seenByPriority[p] ?? 0;
    seenByPriority[r.priority] = (seenByPriority[r.priority] ?? 0) + 1;
    const k = rank.get(r.id) ?? 0;
    ranksByPriority[r.priority]?.push(k);
    maxDisplacement = Math.max(maxDisplacement, Math.abs(i - k));
  });
  let fifoInversions = 0;
  for (const ranks of ranksByPriority) {
    for (let i = 0; i < ranks.length; i++) {
      const ri = ranks[i] ?? 0;
      for (let j = i + 1; j < ranks.length; j++) if ((ranks[j] ?? 0) < ri) fifoInversions++;
    }
  }
  return { priorityInversions, fifoInversions, maxDisplacement, tiesByPid };
}

export const dispatchScaleSection: BenchSection = {
  key: "dispatchScale",
  title: "Dispatch at scale (embedded)",
  async run(ctx) {
    const n = ctx.quick ? 1000 : 10_000;
    const dir = await mkdtemp(join(tmpdir(), "longrun-bench-scale-"));
    const bareCwd = join(dir, "bare");
    await mkdir(bareCwd);
    const script = join(dir, "run-job.sh");
    await writeFile(script, RUN_JOB);
    await chmod(script, 0o755);
    const command = ["/bin/sh", script];
    const runs = join(dir, "runs.txt");
    const queues = {
      scale: {
        command,
        env: { BENCH_RUNS: runs },
        maxRunning: SCALE_RUNNING,
        maxQueued: n + 1000,
        maxAttempts: 1,
        timeoutSeconds: 600,
        queueTtlSeconds: 86_400,
        cancelGraceSeconds: 1,
      },
    };
    const serverEnv = { LONGRUN_SWEEP_INTERVAL_MS: String(SWEEP_INTERVAL_MS) };
    const server = new TestServer({ queues, env: serverEnv });
    const idle = new TestServer({ queues, env: serverEnv });
    try {
      // Baseline: the same server on an empty data directory, after start-up.
      await idle.start();
      await sleep(1000);
      const idleMem = memoryOf(serverPid(idle));
      const idleCpu = cpuSecondsOf(serverPid(idle));
      await idle.dispose();

      // Seed: every request QUEUED before the server (and so any dispatch) starts.
      ctx.log(`dispatchScale: seeding ${n} queued requests (priorities 0–${PRIORITIES - 1})`);
      const config = loadConfigFile(server.configPath);
      const store = new SqliteRequestStore(join(server.dataDir, "longrun.db"));
      const nextId = monotonicFactory();
      const seedStart = wallNow();
      try {
        const deps = {
          store,
          trigger: { wake: async () => {} },
          clock: { now: () => Date.now() },
          ids: { requestId: () => `req_${nextId()}` },
          queues: config.queues,
        };
        for (let i = 0; i < n; i++) {
          const body = { input: { i }, priority: i % PRIORITIES };
          await submitRequest({ tenant: "alice", queue: "scale", body, rawBody: body }, deps);
        }
      } finally {
        store.close();
      }
      const seedMs = wallNow() - seedStart;

      ctx.log(`dispatchScale: draining through maxRunning=${SCALE_RUNNING}`);
      const t0 = wallNow();
      await server.start();
      const ready = wallNow() - t0;
      const pid = serverPid(server);
      const loadBefore = loadText();
      let maxRunning = 0;
      const runningSeen: number[] = [];
      const deadline = Date.now() + 900_000;
      for (;;) {
        const c = await queueCounts(server, "scale");
        maxRunning = Math.max(maxRunning, c.running);
        runningSeen.push(c.running);
        if (c.queued === 0 && c.running === 0) break;
        if (Date.now() > deadline) throw new Error(`not drained: ${JSON.stringify(c)}`);
        await sleep(100);
      }
      const wallMs = wallNow() - t0;
      const mem = memoryOf(pid);
      const cpu = cpuSecondsOf(pid);
      await server.stop();

      const check = new SqliteRequestStore(join(server.dataDir, "longrun.db"));
      let records: RequestRecord[];
      try {
        records = (await check.list({ tenant: "alice", queue: "scale", limit: n + 1 })).items;
      } finally {
        check.close();
      }
      const succeeded = records.filter((r) => r.status === "SUCCEEDED").length;
      const retried = records.filter((r) => r.attempt !== 1).length;
      const ran = await countRuns(runs);
      const ranTwice = [...ran.ids.values()].filter((c) => c > 1).length;
      const order = checkOrder(records);
      const firstStart = Math.min(...records.map((r) => r.startedAt ?? Number.POSITIVE_INFINITY));
      const lastFinish = Math.max(...records.map((r) => r.finishedAt ?? 0));
      const drainMs = lastFinish - firstStart;

      ctx.log(`dispatchScale: floor, ${n} bare spawns ${SCALE_RUNNING} at a time`);
      const floorRuns = join(dir, "floor-runs.txt");
      const bare = new BareSpawner(command, { BENCH_RUNS: floorRuns }, bareCwd);
      let floorMs: number;
      let spawnerRss: number;
      try {
        floorMs = await bare.pool(n, SCALE_RUNNING, "bare-");
        spawnerRss = await bare.rssMiB();
      } finally {
        await bare.close();
      }
      const floorRan = await countRuns(floorRuns);
      if (floorRan.lines !== n) throw new Error(`floor ran ${floorRan.lines} of ${n} jobs`);

      const allGood =
        records.length === n &&
        succeeded === n &&
        retried === 0 &&
        ran.lines === n &&
        ran.ids.size === n &&
        ranTwice === 0;
      const perJobCpuMs = ((cpu - idleCpu) * 1000) / n;
      const cpuShare = (100 * (cpu - idleCpu) * 1000) / drainMs;
      const meanRunning = runningSeen.reduce((a, b) => a + b, 0) / Math.max(1, runningSeen.length);
      const loadAfter = loadText();
      const lines = [
        `## Dispatch at scale (embedded, ${n.toLocaleString("en-US")} queued requests, maxRunning=${SCALE_RUNNING}, instant job)`,
        "",
        `${n.toLocaleString("en-US")} requests across priorities 0–${PRIORITIES - 1} (round-robin in submit order) are written QUEUED through the real submit use case into the server's SQLite file before the server starts; then the server starts and drains them with a job that appends its request id to a file and exits (\`/bin/sh\`, no fork). Drain = first startedAt → last finishedAt in the store; floor = the same command spawned ${SCALE_RUNNING} at a time, the way the runner spawns it, by a plain \`node\` process (no tsx, nothing loaded), first spawn → last exit.`,
        "",
        "| measure | measured | floor (same run) | ratio |",
        "|---|---:|---:|---:|",
        `| drain time | ${(drainMs / 1000).toFixed(2)} s | ${(floorMs / 1000).toFixed(2)} s | ${ratioText(drainMs, floorMs)} |`,
        `| throughput | ${((n * 1000) / drainMs).toFixed(0)} jobs/s | ${((n * 1000) / floorMs).toFixed(0)} jobs/s | ${ratioText(n / drainMs, n / floorMs)} |`,
        `| server start → all finished (wall, incl. ${(ready / 1000).toFixed(2)} s to the ready line) | ${(wallMs / 1000).toFixed(2)} s | | |`,
        `| server peak RSS (VmHWM) | ${mem.peakMiB.toFixed(0)} MiB | ${idleMem.peakMiB.toFixed(0)} MiB (idle server) | ${ratioText(mem.peakMiB, idleMem.peakMiB)} |`,
        `| server CPU (user+sys) beyond start-up, per job | ${perJobCpuMs.toFixed(2)} ms | | |`,
        `| STARTING+RUNNING, polled every 100 ms: mean / most | ${meanRunning.toFixed(1)} / ${maxRunning} | ${SCALE_RUNNING} (maxRunning) | |`,
        `| priority inversions (lower priority started first) | ${order.priorityInversions} | 0 | |`,
        `| FIFO inversions within a priority | ${order.fifoInversions} | 0 | |`,
        `| SUCCEEDED / attempt 1 / ran exactly once | ${succeeded} / ${n - retried} / ${ran.ids.size - ranTwice} | ${n} | |`,
        "",
        `Start order is read from the store: startedAt is non-decreasing in claim order (launches reach the job launcher in claim order and are answered in it), ties within a millisecond (${order.tiesByPid} of them) ordered by the job's pid; largest displacement from the expected order ${order.maxDisplacement}. Seeding ${n.toLocaleString("en-US")} requests through the store took ${(seedMs / 1000).toFixed(2)} s (${((n * 1000) / seedMs).toFixed(0)}/s).`,
        "",
        `Server CPU (all its threads, user+sys) ${cpu.toFixed(1)} s, ${idleCpu.toFixed(1)} s of it start-up (from the idle server): ${cpuShare.toFixed(0)}% of one core over the drain, while at most ${maxRunning} of the ${SCALE_RUNNING} slots were ever in use: the drain is limited by the server's work per job (up to 4 dispatch passes side by side, each waiting for its spawn, and every launch and exit runs on its one event loop), not by maxRunning. ${loadNote(loadBefore, loadAfter)}${allGood ? "" : " **Some requests did not succeed exactly once: see the counts above.**"}`,
      ];
      const summary: SummaryRow[] = [
        {
          measure: `Drain ${n.toLocaleString("en-US")} queued requests, maxRunning=${SCALE_RUNNING}, instant job`,
          value: `${(drainMs / 1000).toFixed(2)} s`,
          floor: `${(floorMs / 1000).toFixed(2)} s`,
          ratio: ratioText(drainMs, floorMs),
        },
        {
          measure: "Dispatch at scale: server peak RSS",
          value: `${mem.peakMiB.toFixed(0)} MiB`,
          floor: `${idleMem.peakMiB.toFixed(0)} MiB`,
          ratio: ratioText(mem.peakMiB, idleMem.peakMiB),
        },
        {
          measure: "Dispatch at scale: priority + FIFO order inversions",
          value: String(order.priorityInversions + order.fifoInversions),
          floor: "0",
          ratio: "",
        },
      ];
      return {
        markdown: lines.join("\n"),
        json: {
          requests: n,
          maxRunning: SCALE_RUNNING,
          priorities: PRIORITIES,
          seedSeconds: round(seedMs / 1000),
          drainSeconds: round(drainMs / 1000),
          wallSeconds: round(wallMs / 1000),
          readySeconds: round(ready / 1000),
          floorSeconds: round(floorMs / 1000),
          throughputPerSecond: round((n * 1000) / drainMs, 1),
          floorThroughputPerSecond: round((n * 1000) / floorMs, 1),
          serverPeakRssMiB: round(mem.peakMiB, 1),
          floorSpawnerRssMiB: round(spawnerRss, 1),
          serverRssAtEndMiB: round(mem.rssMiB, 1),
          idleServerPeakRssMiB: round(idleMem.peakMiB, 1),
          serverCpuSeconds: round(cpu, 2),
          idleServerCpuSeconds: round(idleCpu, 2),
          serverCpuMsPerJob: round(perJobCpuMs),
          maxRunningSeen: maxRunning,
          meanRunningSeen: round(meanRunning, 1),
          serverCpuShareOfOneCorePercent: round(cpuShare, 1),
          loadAverage: { before: loadBefore, after: loadAfter },
          order,
          succeeded,
          retried,
          runLines: ran.lines,
          distinctRuns: ran.ids.size,
          ranMoreThanOnce: ranTwice,
          allSucceededOnce: allGood,
        },
        summary,
      };
    } finally {
      await idle.dispose();
      await server.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  },
};
