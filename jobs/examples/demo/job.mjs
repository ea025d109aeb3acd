#!/usr/bin/env node
/**
 * demo — a deterministic job for trying longrun and for its end-to-end tests. Needs only Node.
 *
 * It counts `steps` steps, sleeping `sleepMs` per step. After each step it writes its
 * checkpoint (`state.json`: the steps done) and then its progress, both atomically (temp
 * file + rename), so a later attempt resumes exactly after the last reported step.
 *
 * Input (LONGRUN_INPUT_FILE, every field optional):
 *   steps          number of steps in all (default 5)
 *   sleepMs        time per step in ms (default 200)
 *   fail           "always"              every attempt fails
 *                  "first-attempt"       attempt 1 fails, later ones succeed
 *                  <n>                   attempts 1..n fail, later ones succeed
 *   failAtStep     a failing attempt exits once this many steps are done in all
 *                  (default: half of `steps`, rounded up), so the next attempt resumes
 *   exitCode       exit code of a failing attempt (default 1)
 *   ignoreSigterm  true: log SIGTERM and keep going (to exercise SIGKILL after the grace)
 *   holdFile       an absolute path: once `holdAtStep` steps are done (default 0), wait
 *                  until this file exists before going on. A test holds a job on a
 *                  condition it releases, not on a duration; never created, the job runs
 *                  until it is killed.
 *   holdAtStep     see `holdFile`
 *   logToFile      true: write the log lines to demo.log in the working directory instead of
 *                  stdout/stderr, and ignore SIGPIPE, so the job outlives a server that held
 *                  its pipes (a test of orphan reaping needs a job that does not die of EPIPE)
 *   output         any JSON, copied into result.json as `output`
 *   artifactBytes  also write artifact.bin of this many deterministic bytes
 *
 * Output: result.json {"steps", "resumedFrom", "attempt", "output"?}, where `resumedFrom`
 * is the number of steps the checkpoint held when this attempt started.
 *
 * On SIGTERM (unless ignoreSigterm) it writes its checkpoint and exits 143.
 * Logs: one stdout line per step, and a start line on stderr.
 *
 * It keeps the job contract by hand, as a job in any language can. A Python job gets each
 * rule from one call of `longrun.job` (jobs/python), as jobs/examples/finetune/train.py does.
 */
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = process.env;
const attempt = Number(env.LONGRUN_ATTEMPT ?? "1");
const input = env.LONGRUN_INPUT_FILE
  ? (JSON.parse(readFileSync(env.LONGRUN_INPUT_FILE, "utf8")) ?? {})
  : {};
const outputDir = env.LONGRUN_OUTPUT_DIR ?? ".";
const checkpointDir = env.LONGRUN_CHECKPOINT_DIR ?? ".";
const progressFile = env.LONGRUN_PROGRESS_FILE;

const steps = Number.isInteger(input.steps) && input.steps >= 0 ? input.steps : 5;
const sleepMs = typeof input.sleepMs === "number" && input.sleepMs >= 0 ? input.sleepMs : 200;
const exitCode = Number.isInteger(input.exitCode) && input.exitCode > 0 ? input.exitCode : 1;
const failAtStep = Number.isInteger(input.failAtStep) ? input.failAtStep : Math.ceil(steps / 2);
const holdFile =
  typeof input.holdFile === "string" && input.holdFile !== "" ? input.holdFile : null;
const holdAtStep = Number.isInteger(input.holdAtStep) ? input.holdAtStep : 0;
const failsThisAttempt =
  input.fail === "always" ||
  (input.fail === "first-attempt" && attempt === 1) ||
  (typeof input.fail === "number" && attempt <= input.fail);

/** One log line to stdout (or stderr), or to demo.log when `logToFile` is set. */
function log(line, stream = "stdout") {
  if (input.logToFile === true) appendFileSync("demo.log", `${line}\n`);
  else if (stream === "stderr") console.error(line);
  else console.log(line);
}
if (input.logToFile === true) process.on("SIGPIPE", () => {});

/** Writes `text` to `file` so that a reader sees the old content or the new, never a mix. */
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
  // No checkpoint yet: a first attempt starts at step 0.
}
const resumedFrom = done;

function saveCheckpoint() {
  writeAtomic(stateFile, JSON.stringify({ step: done }));
}

process.on("SIGTERM", () => {
  if (input.ignoreSigterm === true) {
    log("demo: got SIGTERM, ignoring it");
    return;
  }
  saveCheckpoint();
  log(`demo: got SIGTERM at step ${done}, checkpoint saved`);
  process.exit(143);
});

log(`demo: attempt ${attempt} starting at step ${done} of ${steps}`, "stderr");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether the job waits here for `holdFile` (checked before each step and before the end). */
const held = () => holdFile !== null && done === holdAtStep && !existsSync(holdFile);

let holding = false;
while (done < steps || held()) {
  if (held()) {
    if (!holding) log(`demo: holding at step ${done} until ${holdFile} exists`);
    holding = true;
    await sleep(20);
    continue;
  }
  if (failsThisAttempt && done >= failAtStep) {
    log(`demo: failing on purpose at step ${done} (attempt ${attempt})`, "stderr");
    process.exit(exitCode);
  }
  await sleep(sleepMs);
  done++;
  // Checkpoint first, then progress: the runner saves the checkpoint when progress changes.
  saveCheckpoint();
  if (progressFile) {
    writeAtomic(
      progressFile,
      JSON.stringify({ current: done, total: steps, message: `step ${done}/${steps}` }),
    );
  }
  log(`demo: step ${done}/${steps}`);
}

if (failsThisAttempt) {
  log(`demo: failing on purpose after the last step (attempt ${attempt})`, "stderr");
  process.exit(exitCode);
}

const result = { steps, resumedFrom, attempt };
if (input.output !== undefined) result.output = input.output;
writeFileSync(join(outputDir, "result.json"), JSON.stringify(result));
if (Number.isInteger(input.artifactBytes) && input.artifactBytes > 0) {
  const bytes = Buffer.alloc(input.artifactBytes);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
  writeFileSync(join(outputDir, "artifact.bin"), bytes);
}
log(`demo: done, ${steps} steps (resumed from ${resumedFrom})`);
