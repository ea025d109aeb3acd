// The embedded server's job launcher (see launcher.ts and docs/design.md "The job launcher").
// Plain JavaScript with no imports beyond node's own, so that it starts small: every job is
// forked from this process, and a fork costs in proportion to the forking process's memory.
//
// Protocol: one JSON object per line. The server writes requests to stdin:
//   {"op":"spawn","key":K,"program":P,"args":[...],"cwd":D,"env":{...},"uid"?,"gid"?,"log":F,
//    "header":H,"pidFile":R,"spareDir"?:S}
// and reads answers on stdout:
//   {"key":K,"pid":N,"startTime":S}       the job runs (S: /proc start time, null without /proc)
//   {"key":K,"error":"..."}               it could not be started
//   {"key":K,"taken":true}                another launcher took this key (its record R exists)
//   {"key":K,"exit":true,"code":C,"signal":G,"lastLine":L}   it has exited
// A spawn of a key whose job still runs answers that job again (a request resent by the
// server after it lost track of the answer). Every key is taken once for good: the record R
// is created exclusively before the fork and gets the job's pid right after it, before the
// answer, so whatever moment a launcher dies at, R tells the server whether the job may have
// been forked (R exists) and, nearly always, which process it is. The server removes R once
// it knows the job's end. The job's stdout and stderr are the log file F
// itself, opened for appending: its output reaches the log whatever happens to this process or
// to the server. Jobs lead their own process group (detached), so they outlive this process.
// When stdin ends (the server is gone) the launcher exits and leaves its jobs running.
// With S, R and a new F are linked from empty files the launcher made in S after its last
// answer, not created on the path to the job's start, where a create costs several times a
// link (spare-pool.ts); link(2) fails on an existing name just as the exclusive create does.
import { spawn } from "node:child_process";
import {
  close,
  closeSync,
  fstatSync,
  linkSync,
  mkdirSync,
  open,
  openSync,
  readFileSync,
  readSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";

/**
 * Jobs by key from the spawn request on: `{ pid, startTime }` once running, or the list of
 * answers owed to the requests of it that came while it was being started.
 */
const live = new Map();

function send(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function startTimeOf(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1");
    return text.slice(text.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * Links the spare file `from` (if any) to `path`; false when that did not work (no spare, or
 * it is gone, or on another filesystem), so `path` is made instead. Throws EEXIST: `path`
 * exists.
 */
function linkSpare(from, path) {
  if (!from) return false;
  try {
    linkSync(from, path);
  } catch (error) {
    if (error.code === "EEXIST") throw error;
    return false;
  } finally {
    try {
      unlinkSync(from);
    } catch {
      // gone already
    }
  }
  return true;
}

/** Empty files made ahead in the server's spare folder, for the next Rs and Fs. */
const spares = [];
/** Spares kept ready: two a spawn, for a few spawns sent back to back. */
const SPARES = 8;
let sparesMaking = 0;
let spareCount = 0;
/** A spare folder that could not be written to: not tried again. */
let sparesFailed = null;

/**
 * Tops the spares up to `upTo` in node's thread pool, beside the forks this thread makes; a
 * failure (no spare folder yet) just leaves R and F to be created as before. Called with all
 * of them after a job's exit was answered (the server then records it and claims the next
 * one: a quiet moment here), and after a spawn only when the next one would find none (a
 * new job starting then wants the CPU).
 */
function makeSpares(dir, upTo) {
  while (dir !== sparesFailed && spares.length + sparesMaking < upTo) {
    const path = `${dir}/f${process.pid}-${spareCount++}`;
    sparesMaking++;
    open(path, "wx", 0o600, (error, fd) => {
      if (error) {
        sparesMaking--;
        sparesFailed = dir;
        return;
      }
      close(fd, () => {
        sparesMaking--;
        spares.push(path);
      });
    });
  }
}

/** Takes the key: creates R exclusively (EEXIST: another launcher took it). */
function takeRecord(m) {
  if (linkSpare(m.spareDir ? spares.pop() : undefined, m.pidFile)) {
    return openSync(m.pidFile, "r+");
  }
  return openSync(m.pidFile, "wx", 0o600);
}

function openLog(path, from) {
  try {
    linkSpare(from, path);
  } catch (error) {
    if (error.code !== "EEXIST") throw error; // an earlier attempt's log: appended to
  }
  try {
    return openSync(path, "a", 0o600);
  } catch (error) {
    if (error.code !== "ENOENT") throw error;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    return openSync(path, "a", 0o600);
  }
}

/** Bytes of the log's end read for the last line of output. */
const TAIL_BYTES = 4096;

/**
 * Ends the job's output with a newline (a job may stop mid-line; the runner's own lines follow)
 * and returns its last line that is not one of the runner's, for the failure message.
 */
function finishLog(path) {
  let fd;
  try {
    fd = openSync(path, "r+");
  } catch {
    return "";
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(0, size - TAIL_BYTES);
    const buffer = Buffer.alloc(size - start);
    readSync(fd, buffer, 0, buffer.length, start);
    if (size > 0 && buffer[buffer.length - 1] !== 0x0a) writeSync(fd, "\n", size);
    const lines = buffer.toString("utf8").split("\n");
    for (let i = lines.length - 1; i >= 0; i--) {
      const line = (lines[i] ?? "").replace(/\r$/, "").trim();
      if (line && !line.startsWith("[longrun]") && !line.startsWith("--- attempt")) return line;
    }
    return "";
  } catch {
    return "";
  } finally {
    closeSync(fd);
  }
}

/** Gives a key back: nothing was forked for it (the record must not say it may have been). */
function release(m, record) {
  if (record !== undefined) closeSync(record);
  try {
    unlinkSync(m.pidFile);
  } catch {
    // removed with the work root
  }
  live.delete(m.key);
}

function start(m) {
  const known = live.get(m.key);
  if (known?.waiting) {
    known.waiting++;
    return;
  }
  if (known) {
    send({ key: m.key, pid: known.pid, startTime: known.startTime });
    return;
  }
  // Claimed at once: a resent request read before the spawn event must not start it twice.
  const starting = { waiting: 1 };
  live.set(m.key, starting);
  // Taken for good, across launchers: a launcher that died after this line may have forked.
  let record;
  try {
    record = takeRecord(m);
  } catch (error) {
    live.delete(m.key);
    send(
      error.code === "EEXIST"
        ? { key: m.key, taken: true }
        : { key: m.key, error: `could not record the job: ${error.message}` },
    );
    return;
  }
  let fd;
  try {
    fd = openLog(m.log, m.spareDir ? spares.pop() : undefined);
    if (m.header) writeSync(fd, `${m.header}\n`);
  } catch (error) {
    release(m, record);
    send({ key: m.key, error: `could not open the log: ${error.message}` });
    return;
  }
  let child;
  try {
    child = spawn(m.program, m.args, {
      cwd: m.cwd,
      env: m.env,
      detached: true,
      stdio: ["ignore", fd, fd],
      ...(m.uid !== undefined ? { uid: m.uid, gid: m.gid } : {}),
    });
  } catch (error) {
    closeSync(fd);
    release(m, record);
    send({ key: m.key, error: error.message });
    return;
  }
  // The child holds its own copy of the descriptor.
  closeSync(fd);
  if (child.pid === undefined) {
    closeSync(record);
    // Not started (no such program, no permission): node reports why on the next tick.
    child.once("error", (error) => {
      release(m, undefined);
      send({ key: m.key, error: error.message });
    });
    return;
  }
  // A pid means the program was executed: recorded in R (`<pid> <start time>`), then answered
  // at once, not at the `spawn` event a tick later. Recorded first, so that a server that
  // outlives this launcher finds the process even if it never read the answer.
  const job = { pid: child.pid, startTime: startTimeOf(child.pid) };
  try {
    writeSync(record, `${job.pid} ${job.startTime ?? ""}\n`);
  } catch {
    // a work root gone meanwhile: the answer says it
  }
  closeSync(record);
  live.set(m.key, job);
  for (let i = 0; i < starting.waiting; i++) send({ key: m.key, ...job });
  if (m.spareDir) makeSpares(m.spareDir, 2);
  child.on("error", () => {}); // a later error (a failed kill) must not end the launcher
  child.once("exit", (code, signal) => {
    if (!live.get(m.key)?.pid) return; // never started: the error said so
    live.delete(m.key);
    send({ key: m.key, exit: true, code, signal, lastLine: finishLog(m.log) });
    if (m.spareDir) makeSpares(m.spareDir, SPARES);
  });
}

const ops = { spawn: start };

createInterface({ input: process.stdin }).on("line", (line) => {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    return;
  }
  ops[m.op]?.(m);
});
process.stdin.on("end", () => process.exit(0));
// The server is gone: nobody reads the answers any more.
process.stdout.on("error", () => process.exit(0));
