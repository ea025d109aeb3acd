/**
 * What the `longrun` command line prints for people: tables, a request's summary, and the
 * progress of `submit --wait` (a bar on a terminal, one line per change otherwise).
 */
import { Presets, SingleBar } from "cli-progress";
import type { LongrunRequest, RequestSummary } from "../client/index.ts";

/** Rows as columns padded to their widest cell, two spaces apart; the last column is not padded. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? "").length)));
  return all
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** `2/3`, `2` when the total is unknown, `-` before any progress. */
export function progressCounts(r: Pick<RequestSummary, "progress">): string {
  if (!r.progress) return "-";
  const { current, total } = r.progress;
  return total === null ? String(current) : `${current}/${total}`;
}

/** The rows `longrun list` prints. */
export function requestTable(items: readonly RequestSummary[]): string {
  return table(
    ["ID", "STATUS", "PRIORITY", "ATTEMPT", "PROGRESS", "CREATED"],
    items.map((r) => [
      r.id,
      r.cancelRequested && r.status !== "CANCELLED" ? `${r.status} (cancelling)` : r.status,
      String(r.priority),
      `${r.attempt}/${r.maxAttempts}`,
      progressCounts(r),
      r.createdAt,
    ]),
  );
}

/** `longrun status` without `--json`: one aligned `key  value` line per field. */
export function describeRequest(r: LongrunRequest): string {
  const metadata = Object.entries(r.metadata);
  const progress = r.progress
    ? `${progressCounts(r)}${r.progress.message ? ` ${r.progress.message}` : ""} (${r.progress.updatedAt})`
    : "-";
  const rows: [string, string][] = [
    ["id", r.id],
    ["queue", r.queue],
    [
      "status",
      r.cancelRequested && r.status !== "CANCELLED" ? `${r.status} (cancelling)` : r.status,
    ],
    ["priority", String(r.priority)],
    ["attempt", `${r.attempt}/${r.maxAttempts}`],
    ["position", r.position === null ? "-" : String(r.position)],
    ["waiting", waitText(r)],
    ["estimated start", r.estimatedStartAt ?? "-"],
    ["progress", progress],
    ["error", r.error ? `${r.error.code}: ${r.error.message}` : "-"],
    ["created", r.createdAt],
    ["started", r.startedAt ?? "-"],
    ["finished", r.finishedAt ?? "-"],
    ["metadata", metadata.length ? metadata.map(([k, v]) => `${k}=${v}`).join(" ") : "-"],
    ["input", JSON.stringify(r.input)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

/** `slots_busy`, or `no_capacity: GPUs 2,3 busy`; `-` when it does not wait. */
export function waitText(r: Pick<LongrunRequest, "waitReason" | "waitDetail">): string {
  if (!r.waitReason) return "-";
  return r.waitDetail ? `${r.waitReason}: ${r.waitDetail}` : r.waitReason;
}

/**
 * What a waiting request is doing, in words: `QUEUED (position 2)`,
 * `RUNNING · attempt 1/3 · epoch 2`, `FAILED · attempt 3/3 · job_failed: exit code 1`.
 */
export function stateText(r: LongrunRequest): string {
  const parts: string[] = [r.status];
  if (r.cancelRequested && r.status !== "CANCELLED") parts[0] += " (cancelling)";
  if (r.status === "QUEUED" && r.position !== null) parts[0] += ` (position ${r.position})`;
  if (r.attempt > 1 || (r.attempt === 1 && r.status !== "SUCCEEDED")) {
    parts.push(`attempt ${r.attempt}/${r.maxAttempts}`);
  }
  if (r.status === "RUNNING" && r.progress?.message) parts.push(r.progress.message);
  if (r.error) parts.push(`${r.error.code}: ${r.error.message}`);
  return parts.join(" · ");
}

/** Shows a request's progress while `submit --wait` polls it. */
export interface ProgressView {
  update(r: LongrunRequest): void;
  /** Ends the display (leaves the last state on screen). */
  stop(): void;
}

/** A stream the progress goes to; `isTTY` decides between a bar and plain lines. */
export interface ProgressStream extends NodeJS.WritableStream {
  isTTY?: boolean;
}

/** A progress bar on a terminal, plain lines (one per change) otherwise. */
export function progressView(stream: ProgressStream): ProgressView {
  return stream.isTTY ? barView(stream) : lineView(stream);
}

function barView(stream: ProgressStream): ProgressView {
  const bar = new SingleBar(
    {
      stream,
      format: "{bar} {counts} | {state}",
      barsize: 30,
      hideCursor: false,
      clearOnComplete: false,
      stopOnComplete: false,
      // Redraw on every update: the state text changes without the value changing.
      forceRedraw: true,
    },
    Presets.shades_classic,
  );
  let started = false;
  return {
    update(r) {
      // An unknown total draws an empty bar and shows the count alone.
      const total = r.progress?.total ?? 0;
      const value = r.progress?.current ?? 0;
      const payload = { counts: countsWithPercent(r), state: stateText(r) };
      if (!started) {
        bar.start(Math.max(total, 1), total > 0 ? value : 0, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(total, 1));
        bar.update(total > 0 ? Math.min(value, total) : 0, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

function countsWithPercent(r: LongrunRequest): string {
  const p = r.progress;
  if (!p) return "-";
  if (p.total === null || p.total <= 0) return String(p.current);
  const percent = Math.floor((Math.min(p.current, p.total) / p.total) * 100);
  return `${p.current}/${p.total} ${percent}%`;
}

function lineView(stream: ProgressStream): ProgressView {
  let last = "";
  return {
    update(r) {
      const counts = r.status === "RUNNING" && r.progress ? ` ${countsWithPercent(r)}` : "";
      const line = `${r.id}${counts} ${stateText(r)}`;
      if (line === last) return;
      last = line;
      stream.write(`${new Date().toISOString()} ${line}\n`);
    },
    stop() {},
  };
}

/** Shows the bytes of an upload's PUT as they go out. */
export interface UploadProgress {
  /** `n` more bytes were sent. */
  add(n: number): void;
  /** Ends the display. */
  stop(): void;
}

/** Mebibytes with one decimal, for upload progress. */
function mib(bytes: number): string {
  return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}

/**
 * A byte progress bar with speed on a terminal for files of at least `minBytes` (a small
 * file is done before a bar is worth drawing); nothing otherwise, so logs stay clean.
 */
export function uploadProgress(
  stream: ProgressStream,
  name: string,
  total: number,
  minBytes = 1024 * 1024,
): UploadProgress {
  if (!stream.isTTY || total < minBytes) return { add() {}, stop() {} };
  const bar = new SingleBar(
    {
      stream,
      format: "{bar} {percentage}% | {sent} of {size} | {speed} | {name}",
      barsize: 30,
      hideCursor: false,
      clearOnComplete: false,
    },
    Presets.shades_classic,
  );
  const started = Date.now();
  let sent = 0;
  const payload = () => ({
    name,
    sent: mib(sent),
    size: mib(total),
    speed: `${mib(sent / Math.max(0.001, (Date.now() - started) / 1000))}/s`,
  });
  bar.start(total, 0, payload());
  return {
    add(n) {
      sent += n;
      bar.update(sent, payload());
    },
    stop() {
      bar.stop();
    },
  };
}
