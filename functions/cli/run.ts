/**
 * The `longrun` command line (SPEC §7): parses arguments, calls the typed client and prints
 * for people or, with `--json`, for programs. Exit status: 0 success; 1 an API problem, an
 * unreachable server or (`submit --wait`) a request that did not succeed; 2 a usage error.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { type ParseArgsConfig, parseArgs } from "node:util";
import {
  LongrunApiError,
  LongrunClient,
  LongrunConnectionError,
  type LongrunRequest,
  LongrunResponseError,
  REQUEST_STATUSES,
  type RequestStatus,
  type RequestSummary,
  type SubmitBody,
  type UploadInfo,
} from "../client/index.ts";
import {
  describeRequest,
  type ProgressStream,
  progressView,
  requestTable,
  table,
  uploadProgress,
} from "./format.ts";

/** Where the CLI reads and writes; the real process's streams in production. */
export interface CliIo {
  stdout: ProgressStream;
  stderr: ProgressStream;
  stdin: NodeJS.ReadableStream;
  env: Readonly<Record<string, string | undefined>>;
  /** Registers a Ctrl-C handler for the duration of a wait; returns its remover. */
  onInterrupt?: (handler: () => void) => () => void;
}

/** SPEC §7 defaults. */
export const DEFAULT_URL = "http://127.0.0.1:8080";
export const DEFAULT_TOKEN = "dev";

const POLL_MS = 1000;
const PAGE_MAX = 1000;
const LIST_DEFAULT = 100;

const OPTIONS = {
  url: { type: "string" },
  token: { type: "string" },
  help: { type: "boolean", short: "h" },
  input: { type: "string" },
  "input-file": { type: "string" },
  priority: { type: "string" },
  "idempotency-key": { type: "string" },
  timeout: { type: "string" },
  ttl: { type: "string" },
  wait: { type: "boolean" },
  json: { type: "boolean" },
  download: { type: "string" },
  status: { type: "string" },
  limit: { type: "string" },
  follow: { type: "boolean" },
  rotate: { type: "boolean" },
  file: { type: "string", multiple: true },
  "no-checkpoint": { type: "boolean" },
} as const satisfies ParseArgsConfig["options"];

type OptionName = keyof typeof OPTIONS;
type Values = {
  [K in OptionName]?: (typeof OPTIONS)[K] extends { multiple: true }
    ? string[]
    : (typeof OPTIONS)[K]["type"] extends "string"
      ? string
      : boolean;
};

interface CommandSpec {
  readonly args: readonly string[];
  readonly usage: string;
  readonly summary: string;
  readonly flags: readonly (readonly [flag: string, option: OptionName, help: string])[];
}

const COMMANDS = {
  submit: {
    args: ["queue"],
    usage:
      "longrun submit <queue> [--input JSON | --input-file F] [--priority N] [--idempotency-key K]\n" +
      "               [--timeout S] [--ttl S] [--file NAME=PATH ...] [--wait] [--json]",
    summary: "Submit a request to a queue and print its id.",
    flags: [
      ["--input JSON", "input", "the request's input, any JSON value (default {})"],
      ["--input-file F", "input-file", "read the input from file F (- reads standard input)"],
      ["--priority N", "priority", "0–9, higher starts first (default: the queue's)"],
      ["--idempotency-key K", "idempotency-key", "resubmitting with K returns the same request"],
      ["--timeout S", "timeout", "seconds per attempt, at most the queue's"],
      ["--ttl S", "ttl", "seconds the request may wait before it starts, else EXPIRED"],
      [
        "--file NAME=PATH",
        "file",
        "upload PATH and give it to the job as LONGRUN_INPUT_DIR/NAME\n" +
          "(repeatable; PATH may also be an upload id upl_…)",
      ],
      [
        "--wait",
        "wait",
        "show progress until the request ends, print its output JSON;\n" +
          "exit 0 if it SUCCEEDED, 1 otherwise",
      ],
      [
        "--json",
        "json",
        "print the Request as JSON (with --wait: the result when it SUCCEEDED,\n" +
          "the final Request otherwise)",
      ],
    ],
  },
  status: {
    args: ["id"],
    usage: "longrun status <id> [--json]",
    summary: "Show a request's status, progress and error.",
    flags: [["--json", "json", "print the Request as JSON"]],
  },
  result: {
    args: ["id"],
    usage: "longrun result <id> [--download DIR] [--json]",
    summary: "Print a SUCCEEDED request's output JSON (artifacts are listed on stderr).",
    flags: [
      ["--download DIR", "download", "save every artifact under DIR and print the paths"],
      ["--json", "json", "print the result (id, output, artifacts) as JSON"],
    ],
  },
  cancel: {
    args: ["id"],
    usage: "longrun cancel <id>",
    summary: "Cancel a request: at once if QUEUED, once its job stopped if running.",
    flags: [],
  },
  list: {
    args: ["queue"],
    usage: "longrun list <queue> [--status S] [--limit N] [--json]",
    summary: "List your requests in a queue, newest first.",
    flags: [
      ["--status S", "status", "only this status, or several comma-separated"],
      ["--limit N", "limit", `at most N requests (default ${LIST_DEFAULT})`],
      ["--json", "json", 'print {"items": [...], "nextCursor": ...} as JSON'],
    ],
  },
  logs: {
    args: ["id"],
    usage: "longrun logs <id> [--follow]",
    summary: "Print the job's stdout and stderr, every attempt, oldest first.",
    flags: [["--follow", "follow", "keep printing new lines until the request ends"]],
  },
  retry: {
    args: ["id"],
    usage: "longrun retry <id> [--no-checkpoint] [--wait]",
    summary: "Submit a FAILED, CANCELLED or EXPIRED request again, from its last checkpoint.",
    flags: [
      ["--no-checkpoint", "no-checkpoint", "start clean instead of from the last checkpoint"],
      ["--idempotency-key K", "idempotency-key", "retrying again with K returns the same request"],
      ["--wait", "wait", "as submit --wait"],
      ["--json", "json", "as submit --json"],
    ],
  },
  upload: {
    args: ["path"],
    usage: "longrun upload <path>",
    summary: "Upload a file (a progress bar on a terminal) and print its upload id.",
    flags: [["--json", "json", "print the upload (id, size, status, expiresAt) as JSON"]],
  },
  queues: {
    args: [],
    usage: "longrun queues [--json]",
    summary: "List the queues with their limits and current counts.",
    flags: [["--json", "json", "print the queues as JSON"]],
  },
  "webhook-secret": {
    args: [],
    usage: "longrun webhook-secret [--rotate]",
    summary: "Print your key for verifying webhook signatures (whsec_...).",
    flags: [
      [
        "--rotate",
        "rotate",
        "make a new key and print it; for 24 hours deliveries are signed\n" +
          "with the old key too",
      ],
    ],
  },
} as const satisfies Record<string, CommandSpec>;

type CommandName = keyof typeof COMMANDS;

const GLOBAL_FLAGS = [
  ["--url URL", `API base URL (env LONGRUN_URL, default ${DEFAULT_URL})`],
  ["--token T", `bearer token (env LONGRUN_TOKEN, default ${DEFAULT_TOKEN})`],
  ["-h, --help", "show this help; longrun <command> --help for one command"],
] as const;

/** A mistake in the command line itself: exit status 2 with a usage line. */
export class UsageError extends Error {
  override name = "UsageError";
  constructor(
    message: string,
    readonly command?: CommandName,
  ) {
    super(message);
  }
}

function isCommand(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

function flagLines(flags: readonly (readonly [string, string])[]): string {
  const width = Math.max(...flags.map(([f]) => f.length));
  return flags
    .map(([flag, help]) => {
      const [first, ...rest] = help.split("\n");
      const pad = " ".repeat(width + 4);
      return [`  ${flag.padEnd(width)}  ${first}`, ...rest.map((l) => pad + l)].join("\n");
    })
    .join("\n");
}

function globalHelp(): string {
  const usages = (Object.keys(COMMANDS) as CommandName[])
    .map((name) => usageText("  ", name))
    .join("\n");
  const summaries = table(
    ["", ""],
    Object.entries(COMMANDS).map(([name, c]) => [`  ${name}`, c.summary]),
  )
    .split("\n")
    .slice(1)
    .join("\n");
  return [
    "longrun — submit and follow requests of a longrun deployment",
    "",
    "Usage:",
    usages,
    "",
    "Commands:",
    summaries,
    "",
    "Options:",
    flagLines(GLOBAL_FLAGS),
    "",
    "Exit status: 0 success; 1 an API error, an unreachable server, or (submit --wait) a",
    "request that did not succeed; 2 a usage error.",
  ].join("\n");
}

function commandHelp(name: CommandName): string {
  const c: CommandSpec = COMMANDS[name];
  const flags = [...c.flags.map(([f, , h]) => [f, h] as const), ...GLOBAL_FLAGS];
  return [usageText("Usage: ", name), "", c.summary, "", "Options:", flagLines(flags)].join("\n");
}

/** A command's usage after `prefix`, its continuation lines indented to match. */
function usageText(prefix: string, name: CommandName): string {
  return prefix + COMMANDS[name].usage.replaceAll("\n", `\n${" ".repeat(prefix.length)}`);
}

function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text.endsWith("\n") ? text : `${text}\n`);
}

function printJson(io: CliIo, value: unknown): void {
  write(io.stdout, JSON.stringify(value, null, 2));
}

/** A non-negative decimal integer option, or a usage error naming it. */
function intOption(name: string, value: string | undefined, command: CommandName) {
  if (value === undefined) return undefined;
  if (!/^[0-9]{1,9}$/.test(value)) {
    throw new UsageError(`--${name} must be a whole number, not ${JSON.stringify(value)}`, command);
  }
  return Number(value);
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer | string));
  return Buffer.concat(chunks).toString("utf8");
}

async function readInput(values: Values, io: CliIo): Promise<unknown> {
  if (values.input !== undefined && values["input-file"] !== undefined) {
    throw new UsageError("give --input or --input-file, not both", "submit");
  }
  let text: string;
  let source: string;
  if (values.input !== undefined) {
    text = values.input;
    source = "--input";
  } else if (values["input-file"] !== undefined) {
    const file = values["input-file"];
    source = file === "-" ? "standard input" : file;
    try {
      text = file === "-" ? await readStream(io.stdin) : await readFile(file, "utf8");
    } catch (err) {
      throw new UsageError(`cannot read --input-file ${file}: ${(err as Error).message}`, "submit");
    }
  } else {
    return {};
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${source} is not valid JSON: ${(err as Error).message}`, "submit");
  }
}

function parseStatuses(value: string): RequestStatus[] {
  const statuses: RequestStatus[] = [];
  for (const part of value.split(",")) {
    const s = part.trim().toUpperCase();
    const known = REQUEST_STATUSES.find((k) => k === s);
    if (!known) {
      throw new UsageError(
        `unknown status ${JSON.stringify(part)}; one or more of ${REQUEST_STATUSES.join(", ")}, comma-separated`,
        "list",
      );
    }
    statuses.push(known);
  }
  return statuses;
}

/** Context every command runs with. */
interface Ctx {
  io: CliIo;
  client: LongrunClient;
  values: Values;
}

async function submitCommand(ctx: Ctx, queue: string): Promise<number> {
  const { io, client, values } = ctx;
  const body: SubmitBody = { input: await readInput(values, io) };
  const priority = intOption("priority", values.priority, "submit");
  const timeout = intOption("timeout", values.timeout, "submit");
  const ttl = intOption("ttl", values.ttl, "submit");
  if (priority !== undefined) body.priority = priority;
  if (timeout !== undefined) body.timeoutSeconds = timeout;
  if (ttl !== undefined) body.queueTtlSeconds = ttl;
  const files = await uploadFiles(ctx, values.file ?? []);
  if (Object.keys(files).length > 0) body.files = files;
  const key = values["idempotency-key"];
  const { request, replayed } = await client.submit(
    queue,
    body,
    key !== undefined ? { idempotencyKey: key } : {},
  );
  return followSubmitted(ctx, request, replayed, queue);
}

/**
 * `--file NAME=PATH` options → `files`: each PATH is uploaded (an `upl_…` id is used as it
 * is). Names are checked by the server, which names any it refuses.
 */
async function uploadFiles(ctx: Ctx, specs: readonly string[]): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    if (eq <= 0 || eq === spec.length - 1) {
      throw new UsageError(`--file takes NAME=PATH, not ${JSON.stringify(spec)}`, "submit");
    }
    const name = spec.slice(0, eq);
    const path = spec.slice(eq + 1);
    if (Object.hasOwn(files, name)) {
      throw new UsageError(`--file names ${JSON.stringify(name)} twice`, "submit");
    }
    files[name] = /^upl_[0-9A-Z]{26}$/.test(path)
      ? path
      : (await uploadFile(ctx, path, "submit")).id;
  }
  return files;
}

/** Uploads one file: POST /v1/uploads, then a streamed PUT; the upload READY. */
async function uploadFile(
  { io, client }: Ctx,
  path: string,
  command: CommandName,
): Promise<UploadInfo> {
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error("not a file");
    size = info.size;
  } catch (err) {
    throw new UsageError(`cannot upload ${path}: ${(err as Error).message}`, command);
  }
  const name = basename(path);
  const created = await client.createUpload({ filename: name, size });
  const progress = uploadProgress(io.stderr, name, size);
  try {
    const stream = createReadStream(path);
    stream.on("data", (chunk) => progress.add(chunk.length));
    await client.putUpload(created, Readable.toWeb(stream) as ReadableStream<Uint8Array>);
  } finally {
    progress.stop();
  }
  const upload = await client.getUpload(created.id);
  if (upload.status !== "READY") {
    throw new Error(`upload ${upload.id} of ${path} is ${upload.status} after its PUT`);
  }
  return upload;
}

async function uploadCommand(ctx: Ctx, path: string): Promise<number> {
  const upload = await uploadFile(ctx, path, "upload");
  if (ctx.values.json) printJson(ctx.io, upload);
  else write(ctx.io.stdout, upload.id);
  return 0;
}

async function retryCommand(ctx: Ctx, id: string): Promise<number> {
  const { client, values } = ctx;
  const key = values["idempotency-key"];
  const { request, replayed } = await client.retry(id, {
    fromCheckpoint: values["no-checkpoint"] !== true,
    ...(key !== undefined ? { idempotencyKey: key } : {}),
  });
  return followSubmitted(ctx, request, replayed, request.queue);
}

/** After a submit or a retry: print the id, or with --wait follow it to its end. */
async function followSubmitted(
  ctx: Ctx,
  request: LongrunRequest,
  replayed: boolean,
  queue: string,
): Promise<number> {
  const { io, client, values } = ctx;
  const replayNote = replayed ? " (replayed: an earlier submit with this idempotency key)" : "";
  if (!values.wait) {
    if (values.json) printJson(io, request);
    else write(io.stdout, request.id);
    if (replayed) write(io.stderr, `${request.id}${replayNote}`);
    return 0;
  }

  write(io.stderr, `${request.id} submitted to ${queue}${replayNote}`);
  const final = await waitWithProgress(ctx, request);
  if (final === undefined) return 130;
  if (final.status === "SUCCEEDED") {
    const result = await client.result(final.id);
    if (values.json) printJson(io, result);
    else printJson(io, result.output);
    return 0;
  }
  const why = final.error ? `: ${final.error.code}: ${final.error.message}` : "";
  write(io.stderr, `${final.id} ended ${final.status}${why}`);
  if (values.json) printJson(io, final);
  return 1;
}

/** Polls until the request ends; undefined when the user interrupted the wait. */
async function waitWithProgress(
  { io, client }: Ctx,
  request: LongrunRequest,
): Promise<LongrunRequest | undefined> {
  const view = progressView(io.stderr);
  const abort = new AbortController();
  const removeHandler = io.onInterrupt?.(() => abort.abort());
  try {
    view.update(request);
    return await client.waitFor(request.id, {
      intervalMs: POLL_MS,
      signal: abort.signal,
      onUpdate: (r) => view.update(r),
    });
  } catch (err) {
    if (!abort.signal.aborted) throw err;
    view.stop();
    write(
      io.stderr,
      `\nstopped waiting; ${request.id} goes on (longrun cancel ${request.id} stops it)`,
    );
    return undefined;
  } finally {
    view.stop();
    removeHandler?.();
  }
}

async function statusCommand({ io, client, values }: Ctx, id: string): Promise<number> {
  const request = await client.get(id);
  if (values.json) printJson(io, request);
  else write(io.stdout, describeRequest(request));
  return 0;
}

async function resultCommand({ io, client, values }: Ctx, id: string): Promise<number> {
  const result = await client.result(id);
  const dir = values.download;
  if (dir === undefined) {
    if (values.json) {
      printJson(io, result);
      return 0;
    }
    printJson(io, result.output);
    for (const a of result.artifacts)
      write(io.stderr, `artifact ${a.name} (${a.size} bytes) ${a.url}`);
    return 0;
  }
  const root = resolve(dir);
  await mkdir(root, { recursive: true });
  const saved: { name: string; size: number; url: string; path: string }[] = [];
  for (const artifact of result.artifacts) {
    const dest = resolve(root, artifact.name);
    if (!dest.startsWith(root + sep)) {
      throw new Error(`refusing to save artifact ${JSON.stringify(artifact.name)} outside ${dir}`);
    }
    await mkdir(dirname(dest), { recursive: true });
    const partial = `${dest}.part`;
    try {
      const body = await client.download(artifact);
      await pipeline(
        Readable.fromWeb(body as NodeReadableStream<Uint8Array>),
        createWriteStream(partial),
      );
      const { size } = await stat(partial);
      if (size !== artifact.size) {
        throw new Error(`${artifact.name}: received ${size} bytes, expected ${artifact.size}`);
      }
      await rename(partial, dest);
    } catch (err) {
      await rm(partial, { force: true });
      throw err;
    }
    const path = join(dir, artifact.name);
    saved.push({ ...artifact, path });
    if (!values.json) write(io.stdout, path);
  }
  if (values.json) printJson(io, { ...result, artifacts: saved });
  else if (saved.length === 0) write(io.stderr, `${id} has no artifacts`);
  return 0;
}

async function cancelCommand({ io, client }: Ctx, id: string): Promise<number> {
  const r = await client.cancel(id);
  const note =
    r.cancelRequested && r.status !== "CANCELLED"
      ? " (cancel requested; CANCELLED once its job has stopped)"
      : "";
  write(io.stdout, `${r.id} ${r.status}${note}`);
  return 0;
}

async function listCommand({ io, client, values }: Ctx, queue: string): Promise<number> {
  const limit = intOption("limit", values.limit, "list") ?? LIST_DEFAULT;
  if (limit < 1) throw new UsageError("--limit must be at least 1", "list");
  const status = values.status !== undefined ? parseStatuses(values.status) : undefined;
  const items: RequestSummary[] = [];
  let cursor: string | undefined;
  let nextCursor: string | null = null;
  // Pages sized to what is still wanted, so the last page ends exactly at `limit` and its
  // nextCursor is exactly where the listing stopped.
  do {
    const page = await client.list(queue, {
      limit: Math.min(limit - items.length, PAGE_MAX),
      ...(status ? { status } : {}),
      ...(cursor ? { cursor } : {}),
    });
    items.push(...page.items);
    nextCursor = page.nextCursor;
    cursor = nextCursor ?? undefined;
  } while (cursor && items.length < limit);
  if (values.json) {
    printJson(io, { items, nextCursor });
    return 0;
  }
  if (items.length === 0) {
    write(
      io.stderr,
      `no requests in ${queue}${values.status ? ` with status ${values.status}` : ""}`,
    );
    return 0;
  }
  write(io.stdout, requestTable(items));
  if (nextCursor) write(io.stderr, `(first ${items.length}; --limit shows more)`);
  return 0;
}

async function logsCommand({ io, client, values }: Ctx, id: string): Promise<number> {
  if (values.follow) {
    for await (const line of client.followLogs(id, { intervalMs: POLL_MS })) write(io.stdout, line);
    return 0;
  }
  let cursor: string | undefined;
  for (;;) {
    const page = await client.logs(id, { limit: PAGE_MAX, ...(cursor ? { cursor } : {}) });
    for (const line of page.lines) write(io.stdout, line);
    if (page.lines.length < PAGE_MAX) return 0;
    cursor = page.nextCursor;
  }
}

async function queuesCommand({ io, client, values }: Ctx): Promise<number> {
  const queues = await client.queues();
  if (values.json) {
    printJson(io, queues);
    return 0;
  }
  write(
    io.stdout,
    table(
      ["NAME", "QUEUED", "RUNNING", "MAX QUEUED", "MAX RUNNING", "YOURS", "YOUR MAX"],
      queues.map((q) => [
        q.name,
        String(q.queued),
        String(q.running),
        String(q.maxQueued),
        String(q.maxRunning),
        q.tenant ? `${q.tenant.queued}/${q.tenant.running}` : "-",
        q.tenant ? `${q.tenant.maxQueued}/${q.tenant.maxRunning}` : "-",
      ]),
    ),
  );
  return 0;
}

async function webhookSecretCommand({ io, client, values }: Ctx): Promise<number> {
  write(
    io.stdout,
    values.rotate ? await client.rotateWebhookSecret() : await client.webhookSecret(),
  );
  return 0;
}

/** Parses the command line; throws {@link UsageError} on anything malformed. */
function parse(argv: readonly string[]): {
  command: CommandName | undefined;
  positionals: string[];
  values: Values;
} {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    const command = argv.find((a) => !a.startsWith("-"));
    const message = (err as Error).message.split(". ")[0] ?? String(err);
    throw new UsageError(message, command && isCommand(command) ? command : undefined);
  }
  const values = parsed.values as Values;
  const [name, ...positionals] = parsed.positionals;
  if (name === undefined) return { command: undefined, positionals, values };
  if (!isCommand(name)) throw new UsageError(`unknown command ${JSON.stringify(name)}`);
  const spec: CommandSpec = COMMANDS[name];
  const allowed = new Set<OptionName>(["url", "token", "help", ...spec.flags.map(([, o]) => o)]);
  for (const option of Object.keys(values) as OptionName[]) {
    if (!allowed.has(option)) {
      throw new UsageError(`${name} has no option --${option}`, name);
    }
  }
  if (!values.help) {
    if (positionals.length < spec.args.length) {
      throw new UsageError(`missing <${spec.args[positionals.length]}>`, name);
    }
    if (positionals.length > spec.args.length) {
      throw new UsageError(
        `unexpected argument ${JSON.stringify(positionals[spec.args.length])}`,
        name,
      );
    }
  }
  return { command: name, positionals, values };
}

function errorMessage(err: unknown): string {
  if (err instanceof LongrunApiError) {
    let text = err.detail;
    if (err.code === "no_result" && err.error) text += ` (${err.error.code}: ${err.error.message})`;
    if (err.code === "unauthorized") text += "\n(check --token or LONGRUN_TOKEN)";
    if (err.retryAfterSeconds !== undefined) text += ` (retry after ${err.retryAfterSeconds} s)`;
    return text;
  }
  if (err instanceof LongrunConnectionError || err instanceof LongrunResponseError) {
    return err.message;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Runs one command line; resolves to the exit status. Never throws. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  let command: CommandName | undefined;
  try {
    const parsed = parse(argv);
    command = parsed.command;
    const { positionals, values } = parsed;
    if (command === undefined) {
      if (values.help) {
        write(io.stdout, globalHelp());
        return 0;
      }
      throw new UsageError("missing command");
    }
    if (values.help) {
      write(io.stdout, commandHelp(command));
      return 0;
    }
    const url = values.url ?? (io.env.LONGRUN_URL || DEFAULT_URL);
    const token = values.token ?? (io.env.LONGRUN_TOKEN || DEFAULT_TOKEN);
    let client: LongrunClient;
    try {
      client = new LongrunClient({ url, token });
    } catch {
      throw new UsageError(`not an http(s) URL: ${JSON.stringify(url)}`, command);
    }
    const ctx: Ctx = { io, client, values };
    const arg = positionals[0] ?? "";
    switch (command) {
      case "submit":
        return await submitCommand(ctx, arg);
      case "status":
        return await statusCommand(ctx, arg);
      case "result":
        return await resultCommand(ctx, arg);
      case "cancel":
        return await cancelCommand(ctx, arg);
      case "list":
        return await listCommand(ctx, arg);
      case "logs":
        return await logsCommand(ctx, arg);
      case "queues":
        return await queuesCommand(ctx);
      case "webhook-secret":
        return await webhookSecretCommand(ctx);
      case "retry":
        return await retryCommand(ctx, arg);
      case "upload":
        return await uploadCommand(ctx, arg);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      const which = err.command ?? command;
      write(io.stderr, `longrun: ${err.message}`);
      if (which) write(io.stderr, usageText("usage: ", which));
      else write(io.stderr, "usage: longrun <command> [options]   (longrun --help lists them)");
      return 2;
    }
    write(io.stderr, `longrun: ${errorMessage(err)}`);
    return 1;
  }
}
