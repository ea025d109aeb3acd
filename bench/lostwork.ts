/**
 * Bench item 6 (issue 6): work lost when a checkpointing job is interrupted.
 *
 * A real embedded server (TestServer) runs bench/lostwork-job.mjs, a loop of short steps
 * that checkpoints every K steps (one checkpoint interval = K steps). The bench kills the
 * JOB process (never the server) at a uniformly random time within its run, found through
 * /proc by its LONGRUN_REQUEST_ID and LONGRUN_ATTEMPT, either with SIGKILL (a crash: no
 * chance to save) or with SIGTERM (a Spot-style notice: the job checkpoints and exits). The
 * server retries the attempt; the next attempt says which step it resumed from.
 *
 * Work redone = steps the killed attempt had completed − the step the next attempt resumed
 * from, as a fraction of one checkpoint interval. The job's marker file (one line per
 * step, checkpoint and start) is the record of both. A violation is a resume from before
 * the last checkpoint the killed attempt wrote (work lost that WAS checkpointed), or from
 * beyond the steps it completed.
 */
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createRng } from "../chaos/prng.ts";
import { TestServer } from "../test/helpers/server.ts";
import type { BenchContext, BenchSection, SummaryRow } from "./section.ts";
import { type Distribution, distribution, ms } from "./stats.ts";

const JOB = join(import.meta.dirname, "lostwork-job.mjs");
const QUEUE = "lostwork";
/** Steps per checkpoint interval. */
const EVERY = 10;
/** Time per step: one interval is EVERY × STEP_MS. */
const STEP_MS = 20;
const INTERVAL_MS = EVERY * STEP_MS;
/** Kills land uniformly within this many intervals after an attempt's first checkpoint. */
const KILL_WINDOW_INTERVALS = 3;
/** The config's ceiling: each kill consumes an attempt, so a request takes MAX_ATTEMPTS − 1. */
const MAX_ATTEMPTS = 10;

interface Marker {
  kind: "start" | "step" | "ckpt" | "term";
  attempt: number;
  n: number;
  at: number;
  pid?: number;
}

async function readMarkers(file: string): Promise<Marker[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return [];
  }
  const out: Marker[] = [];
  for (const line of text.split("\n")) {
    const parts = line.split(" ");
    const kind = parts[0];
    if (kind === "start" && parts.length === 5) {
      out.push({
        kind,
        attempt: Number(parts[1]),
        n: Number(parts[2]),
        pid: Number(parts[3]),
        at: Number(parts[4]),
      });
    } else if ((kind === "step" || kind === "ckpt" || kind === "term") && parts.length === 4) {
      out.push({ kind, attempt: Number(parts[1]), n: Number(parts[2]), at: Number(parts[3]) });
    }
  }
  return out;
}

/** Polls the marker file until `pick` finds a marker; `what` names it in the timeout error. */
async function waitForMarker(
  file: string,
  pick: (m: Marker) => boolean,
  what: string,
  timeoutMs = 20_000,
): Promise<Marker> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const found = (await readMarkers(file)).find(pick);
    if (found) return found;
    await sleep(2);
  }
  throw new Error(`no ${what} within ${timeoutMs} ms (${file})`);
}

function waitForStart(file: string, attempt: number): Promise<Marker> {
  return waitForMarker(
    file,
    (m) => m.kind === "start" && m.attempt === attempt,
    `start of attempt ${attempt}`,
  );
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** The pid of the process whose environment names this request's attempt, via /proc. */
async function findJobPid(requestId: string, attempt: number): Promise<number | null> {
  const want = [`LONGRUN_REQUEST_ID=${requestId}`, `LONGRUN_ATTEMPT=${attempt}`];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let environ: string;
    try {
      environ = await readFile(`/proc/${name}/environ`, "utf8");
    } catch {
      continue; // gone, or not ours
    }
    const vars = environ.split("\0");
    if (want.every((v) => vars.includes(v))) return Number(name);
  }
  return null;
}

interface Kill {
  signal: NodeJS.Signals;
  requestId: string;
  attempt: number;
  /** ms after the attempt's first checkpoint at which the signal was sent. */
  offsetMs: number;
  /** The interval length the kill window used (median of the job's recent intervals). */
  windowMs: number;
  /** When the signal actually went out, ms after the attempt's first checkpoint. */
  sentAfterMs: number;
  resumedFromBefore: number;
  completed: number;
  lastCheckpoint: number;
  resumedFrom: number;
  lostSteps: number;
  /** lostSteps / EVERY. */
  lostIntervals: number;
  /** Also counting the step in flight when the signal came (time since the last step). */
  lostIntervalsWithPartial: number;
  /** Signal → the next attempt's start marker (retry, restore, process start). */
  recoveryMs: number;
  violation: string | null;
  /** The attempt the status showed once the next attempt ran. */
  statusAttempt: number | null;
  pidFromProc: number | null;
  pidFromJob: number | undefined;
}

interface SeriesResult {
  signal: NodeJS.Signals;
  kills: Kill[];
  /** What the status said after the last allowed attempt was killed too. */
  finalStatus: { status: string; attempt: number; error: unknown } | null;
}

async function runSeries(
  ctx: BenchContext,
  server: TestServer,
  markerDir: string,
  signal: NodeJS.Signals,
  killsWanted: number,
  seed: number,
): Promise<SeriesResult> {
  const random = createRng(seed).next;
  const kills: Kill[] = [];
  /** Observed checkpoint-to-checkpoint times of this job (ms), for the kill window. */
  const intervals: number[] = [];
  let finalStatus: SeriesResult["finalStatus"] = null;
  const perRequest = MAX_ATTEMPTS - 1;
  const requests = Math.ceil(killsWanted / perRequest);
  for (let r = 0; r < requests; r++) {
    const last = r === requests - 1;
    const killsHere = Math.min(perRequest, killsWanted - r * perRequest);
    const res = await server.submit(QUEUE, {
      input: { steps: 1_000_000, stepMs: STEP_MS, every: EVERY },
    });
    if (res.status !== 202) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
    const id = res.body.id as string;
    const file = join(markerDir, `${id}.log`);
    // The last request of the series also loses its final attempt, to see how it ends.
    const attemptsToKill = last ? MAX_ATTEMPTS : killsHere;
    for (let attempt = 1; attempt <= attemptsToKill; attempt++) {
      const start = await waitForStart(file, attempt);
      const pid = await findJobPid(id, attempt);
      // Uniform in time over KILL_WINDOW_INTERVALS whole intervals, anchored at the attempt's
      // first checkpoint (a boundary) and as long as the intervals this job really takes:
      // every phase of an interval is then about equally likely, also when steps stretch
      // unevenly on a busy machine (a window of one interval would under-sample the end of
      // the longer ones).
      const anchor = await waitForMarker(
        file,
        (m) => m.kind === "ckpt" && m.attempt === attempt && m.n > start.n,
        `first checkpoint of attempt ${attempt}`,
      );
      const intervalMs = intervals.length > 0 ? median(intervals.slice(-20)) : INTERVAL_MS;
      const offsetMs = random() * KILL_WINDOW_INTERVALS * intervalMs;
      const wait = anchor.at + offsetMs - Date.now();
      if (wait > 0) await sleep(wait);
      const target = pid ?? start.pid;
      if (target === undefined) throw new Error(`no pid for ${id} attempt ${attempt}`);
      const killedAt = Date.now();
      process.kill(target, signal);
      if (attempt === MAX_ATTEMPTS) {
        const done = await server.waitFor(id, (b) => b.status !== "RUNNING", {
          timeoutMs: 20_000,
        });
        finalStatus = { status: done.status, attempt: done.attempt, error: done.error };
        break;
      }
      const next = await waitForStart(file, attempt + 1);
      const markers = (await readMarkers(file)).filter((m) => m.attempt === attempt);
      const ckpts = markers.filter((m) => m.kind === "ckpt");
      for (let i = 1; i < ckpts.length; i++) {
        const a = ckpts[i - 1] as Marker;
        const b = ckpts[i] as Marker;
        if (b.n - a.n === EVERY) intervals.push(b.at - a.at);
      }
      const stepsDone = markers.filter((m) => m.kind === "step");
      const completed = Math.max(start.n, ...stepsDone.map((m) => m.n));
      const lastCheckpoint = Math.max(
        start.n,
        ...markers.filter((m) => m.kind === "ckpt").map((m) => m.n),
      );
      const lastStepAt = stepsDone.at(-1)?.at ?? start.at;
      const partialMs = Math.min(STEP_MS, Math.max(0, killedAt - lastStepAt));
      const lostSteps = completed - next.n;
      let violation: string | null = null;
      if (next.n < lastCheckpoint) {
        violation = `resumed from ${next.n}, below its checkpoint of ${lastCheckpoint}`;
      } else if (next.n > completed) {
        violation = `resumed from ${next.n}, beyond the ${completed} steps done`;
      }
      const status = await server.fetch(`/v1/requests/${id}`);
      kills.push({
        signal,
        requestId: id,
        attempt,
        offsetMs,
        windowMs: intervalMs,
        sentAfterMs: killedAt - anchor.at,
        resumedFromBefore: start.n,
        completed,
        lastCheckpoint,
        resumedFrom: next.n,
        lostSteps,
        lostIntervals: lostSteps / EVERY,
        lostIntervalsWithPartial: (lostSteps * STEP_MS + partialMs) / INTERVAL_MS,
        recoveryMs: next.at - killedAt,
        violation,
        statusAttempt: status.status === 200 ? (status.body.attempt as number) : null,
        pidFromProc: pid,
        pidFromJob: start.pid,
      });
    }
    if (!last) {
      // Done with this request: stop it (SIGTERM by the runner, then CANCELLED).
      await server.fetch(`/v1/requests/${id}/cancel`, { method: "POST" });
      await server.waitForStatus(id, "CANCELLED", 20_000);
    }
    ctx.log(`lostWork: ${signal} ${kills.length}/${killsWanted} kills`);
  }
  return { signal, kills, finalStatus };
}

interface SeriesSummary {
  signal: NodeJS.Signals;
  kills: number;
  lostIntervals: Distribution;
  lostIntervalsWithPartial: Distribution;
  recoveryMs: Distribution;
  /** How many kills lost 0, 1, … EVERY − 1 steps. */
  histogram: number[];
  violations: string[];
  pidMismatches: number;
  /** Kills after which the status showed the next attempt number. */
  attemptConsumed: number;
}

function summarize(series: SeriesResult): SeriesSummary {
  const k = series.kills;
  const histogram = Array.from({ length: EVERY }, () => 0);
  for (const kill of k) {
    const i = Math.min(EVERY - 1, Math.max(0, kill.lostSteps));
    histogram[i] = (histogram[i] ?? 0) + 1;
  }
  return {
    signal: series.signal,
    kills: k.length,
    lostIntervals: distribution(k.map((x) => x.lostIntervals)),
    lostIntervalsWithPartial: distribution(k.map((x) => x.lostIntervalsWithPartial)),
    recoveryMs: distribution(k.map((x) => x.recoveryMs)),
    histogram,
    violations: k.flatMap((x) =>
      x.violation ? [`${x.requestId} attempt ${x.attempt}: ${x.violation}`] : [],
    ),
    pidMismatches: k.filter((x) => x.pidFromProc !== x.pidFromJob).length,
    attemptConsumed: k.filter((x) => x.statusAttempt === x.attempt + 1).length,
  };
}

function f2(n: number): string {
  return n.toFixed(2);
}

export const lostWorkSection: BenchSection = {
  key: "lostWork",
  title: "Work lost when a checkpointing job is interrupted",
  async run(ctx) {
    // Nine kills per request (maxAttempts 10): 2 requests per signal when quick, 9 in full.
    const killsEach = ctx.quick ? 18 : 81;
    const markerDir = await mkdtemp(join(tmpdir(), "longrun-bench-lostwork-"));
    const server = new TestServer({
      queues: {
        [QUEUE]: {
          command: [process.execPath, JOB],
          maxQueued: 100,
          maxRunning: 2,
          timeoutSeconds: 600,
          maxAttempts: MAX_ATTEMPTS,
          queueTtlSeconds: 600,
          cancelGraceSeconds: 2,
          env: { BENCH_MARKER_DIR: markerDir },
        },
      },
    });
    let results: SeriesResult[];
    try {
      await server.start();
      // Both series at once (two slots): each kill is timed on its own job's clock.
      results = await Promise.all([
        runSeries(ctx, server, markerDir, "SIGKILL", killsEach, 6001),
        runSeries(ctx, server, markerDir, "SIGTERM", killsEach, 6002),
      ]);
    } finally {
      await server.stop().catch(() => {});
      await server.dispose();
      await rm(markerDir, { recursive: true, force: true });
    }
    const summaries = results.map(summarize);
    const [crash, notice] = summaries as [SeriesSummary, SeriesSummary];
    // Uniform kills over whole intervals lose 0 … EVERY−1 completed steps, each equally
    // likely: (EVERY − 1) / 2 steps on average. A notice that is honoured loses none.
    const expectedCrash = (EVERY - 1) / 2 / EVERY;

    const lines: string[] = [];
    lines.push("## Work lost when a checkpointing job is interrupted (issue 6 item 6)");
    lines.push("");
    lines.push(
      `bench/lostwork-job.mjs on a real embedded server: steps of ${STEP_MS} ms, a checkpoint every ${EVERY} steps (interval ${INTERVAL_MS} ms), progress after every step. The job process (found in /proc by LONGRUN_REQUEST_ID and LONGRUN_ATTEMPT) is signalled at a uniformly random time (seeded) within ${KILL_WINDOW_INTERVALS} checkpoint intervals from the attempt's first checkpoint, intervals as long as the job's observed ones (median ${ms(median(results.flatMap((r) => r.kills.map((k) => k.windowMs))))}; steps stretch on a busy machine); the server retries it and the next attempt reports where it resumed. Work redone = steps completed before the signal − step resumed from, in checkpoint intervals.`,
    );
    lines.push("");
    lines.push(
      "| signal | kills | redone: mean | p50 | p90 | max | with the step in flight: mean | p90 | expected mean | violations | recovery p50 / p90 |",
    );
    lines.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const s of summaries) {
      const expected = s.signal === "SIGKILL" ? expectedCrash : 0;
      lines.push(
        `| ${s.signal} | ${s.kills} | ${f2(s.lostIntervals.mean)} | ${f2(s.lostIntervals.p50)} | ${f2(s.lostIntervals.p90)} | ${f2(s.lostIntervals.max)} | ${f2(s.lostIntervalsWithPartial.mean)} | ${f2(s.lostIntervalsWithPartial.p90)} | ${f2(expected)} | ${s.violations.length} | ${ms(s.recoveryMs.p50)} / ${ms(s.recoveryMs.p90)} |`,
      );
    }
    lines.push("");
    lines.push(
      `Steps redone per kill (0…${EVERY - 1}): SIGKILL ${crash.histogram.join(" ")}; SIGTERM ${notice.histogram.join(" ")}.`,
    );
    lines.push("");
    const fin = results.map((r) =>
      r.finalStatus
        ? `${r.signal}: ${r.finalStatus.status} at attempt ${r.finalStatus.attempt}, error ${JSON.stringify(r.finalStatus.error)}`
        : `${r.signal}: –`,
    );
    lines.push(
      `How the server treats a job killed by a signal it did not send: the runner reports the attempt \`failed\` (jobs/runner/attempt.ts: not stopped by longrun, exit by signal or code 143), and finishAttempt (functions/core/usecases/lifecycle.ts) retries it as a new attempt in the same slot — RUNNING → STARTING with attempt + 1 — while attempt < maxAttempts, resuming from the checkpoint the runner saved at exit. Every interruption consumes an attempt: the status showed the next attempt after ${crash.attemptConsumed + notice.attemptConsumed} of ${crash.kills + notice.kills} kills, and killing the last allowed attempt (maxAttempts = ${MAX_ATTEMPTS}, the config's ceiling) ends the request: ${fin.join("; ")}.`,
    );
    lines.push("");
    lines.push(
      `- **Crash (SIGKILL):** the job cannot save anything, so it resumes from its last periodic checkpoint: on average ${f2(crash.lostIntervals.mean)} of an interval redone (expected ${f2(expectedCrash)} for whole steps; ${f2(crash.lostIntervalsWithPartial.mean)} counting the step in flight, → 0.5 as steps get shorter), never more than one interval (max ${f2(crash.lostIntervals.max)}). A checkpoint the job wrote after the runner's last progress poll (every 250 ms) survives too: the runner saves the checkpoint folder again at exit, whatever the exit.`,
    );
    lines.push(
      `- **Notice (SIGTERM):** the job checkpoints on the signal, so nothing completed is redone (mean ${f2(notice.lostIntervals.mean)}); only the step in flight is (${f2(notice.lostIntervalsWithPartial.mean)} of an interval on average, i.e. half a step).`,
    );
    lines.push(
      `- **Nothing checkpointed was lost:** ${crash.violations.length + notice.violations.length} resumes from before the killed attempt's last checkpoint or past its completed steps. Process lookup: /proc and the job's own pid agreed on ${crash.kills + notice.kills - crash.pidMismatches - notice.pidMismatches} of ${crash.kills + notice.kills} kills.`,
    );
    lines.push(
      `- **Recovery** (signal → the next attempt's first line, through the runner's exit handling, the retry transition, checkpoint restore and a Node start): p50 ${ms(crash.recoveryMs.p50)} after SIGKILL, ${ms(notice.recoveryMs.p50)} after SIGTERM. Lost work is bounded by the checkpoint interval, but each interruption also spends one of at most ${MAX_ATTEMPTS} attempts: a long job on Spot capacity that is reclaimed ${MAX_ATTEMPTS} times fails (\`job_failed\`) however little work each reclaim cost. Interruptions the platform reports as such are already free (SPEC §3): a server restart, and on AWS a Batch failure with reason \`Host EC2 (instance …) terminated.\` (the retry strategy EXITs on it and the core retries without counting, up to 10 times). A signal the platform does not announce still reads as the job's failure.`,
    );

    const allViolations = [...crash.violations, ...notice.violations];
    const summary: SummaryRow[] = [
      {
        measure: `Work redone after SIGKILL, mean fraction of a checkpoint interval (${crash.kills} kills, p90 ${f2(crash.lostIntervals.p90)})`,
        value: f2(crash.lostIntervals.mean),
        floor: `${f2(expectedCrash)} (uniform kills)`,
        ratio: (crash.lostIntervals.mean / expectedCrash).toFixed(2),
      },
      {
        measure: `Work redone after SIGTERM (job checkpoints on notice), mean fraction of an interval (${notice.kills} kills, p90 ${f2(notice.lostIntervals.p90)})`,
        value: f2(notice.lostIntervals.mean),
        floor: "0",
        ratio: "",
      },
      {
        measure: "Checkpointed work lost on interruption (violations)",
        value: String(allViolations.length),
        floor: "0",
        ratio: "",
      },
    ];
    return {
      markdown: lines.join("\n"),
      json: {
        stepMs: STEP_MS,
        checkpointEverySteps: EVERY,
        intervalMs: INTERVAL_MS,
        killWindow: `uniform over ${KILL_WINDOW_INTERVALS} observed intervals after the attempt's first checkpoint`,
        maxAttempts: MAX_ATTEMPTS,
        expectedCrashMean: expectedCrash,
        series: summaries.map((s, i) => ({
          ...s,
          finalStatus: results[i]?.finalStatus ?? null,
          killDetails: results[i]?.kills ?? [],
        })),
      },
      summary,
    };
  },
};
