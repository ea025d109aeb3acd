#!/usr/bin/env node
/**
 * lostwork-job — the job bench/lostwork.ts interrupts. A training loop in miniature: it
 * counts `steps` steps of `stepMs` each, writes its checkpoint (`state.json`: the steps
 * done) every `every` steps — one checkpoint interval — and reports progress after every
 * step. On SIGTERM it writes a checkpoint of the steps done and exits 143 (SPEC §4).
 *
 * Input (LONGRUN_INPUT_FILE): {"steps": n, "stepMs": ms, "every": k}.
 *
 * So that the bench can tell what was done and what was kept, it appends one line per
 * event to `$BENCH_MARKER_DIR/<request id>.log` (each line one write; <ms> is Date.now()):
 *   start <attempt> <resumedFrom> <pid> <ms>   the SIGTERM handler is installed, work begins
 *   step <attempt> <n> <ms>                     step n is done
 *   ckpt <attempt> <n> <ms>                     the checkpoint holding n steps is in place
 *   term <attempt> <n> <ms>                     SIGTERM: checkpoint of n steps written, exiting
 */
import { appendFileSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const attempt = Number(env.LONGRUN_ATTEMPT ?? "1");
const input = JSON.parse(readFileSync(env.LONGRUN_INPUT_FILE ?? "", "utf8")) ?? {};
const steps = Number.isInteger(input.steps) ? input.steps : 1000;
const stepMs = typeof input.stepMs === "number" ? input.stepMs : 20;
const every = Number.isInteger(input.every) && input.every > 0 ? input.every : 10;
const checkpointDir = env.LONGRUN_CHECKPOINT_DIR ?? ".";
const markerFile = join(env.BENCH_MARKER_DIR ?? ".", `${env.LONGRUN_REQUEST_ID ?? "job"}.log`);

function mark(kind, n) {
  appendFileSync(markerFile, `${kind} ${attempt} ${n} ${Date.now()}\n`);
}

function writeAtomic(file, text) {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

const stateFile = join(checkpointDir, "state.json");
let done = 0;
try {
  done = JSON.parse(readFileSync(stateFile, "utf8")).step ?? 0;
} catch {
  // No checkpoint: a first attempt starts at step 0.
}
const resumedFrom = done;

function checkpoint() {
  writeAtomic(stateFile, JSON.stringify({ step: done }));
  mark("ckpt", done);
}

process.on("SIGTERM", () => {
  checkpoint();
  mark("term", done);
  process.exit(143);
});

appendFileSync(markerFile, `start ${attempt} ${resumedFrom} ${process.pid} ${Date.now()}\n`);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
while (done < steps) {
  await sleep(stepMs);
  done++;
  mark("step", done);
  if (done % every === 0) checkpoint();
  if (env.LONGRUN_PROGRESS_FILE) {
    writeAtomic(env.LONGRUN_PROGRESS_FILE, JSON.stringify({ current: done, total: steps }));
  }
}
writeFileSync(
  join(env.LONGRUN_OUTPUT_DIR ?? ".", "result.json"),
  JSON.stringify({ steps, resumedFrom, attempt }),
);
