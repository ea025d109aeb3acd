/**
 * A contender for the SQLite multi-process tests (sqlite-store.test.ts). Run as
 * `node --import tsx sqlite-race-worker.ts '<json task>'`: it opens its own
 * SqliteRequestStore on the shared file, prints `ready`, waits for `go` on stdin so that
 * every process starts at once, does its task and prints one JSON line with what it saw.
 */
import { createInterface } from "node:readline";
import { ulid } from "ulidx";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import type { RequestRecord } from "../../functions/core/request.ts";

/** What the parent test asks a worker to do. */
export type RaceTask =
  | {
      mode: "submit";
      path: string;
      tenant: string;
      queue: string;
      key: string;
      bodyHash: string;
      count: number;
      createdAt: number;
    }
  | { mode: "dispatch"; path: string; queue: string; maxRunning: number; now: number };

/** The JSON line a worker prints when done. */
export type RaceReport =
  | { mode: "submit"; created: string[]; replayed: string[] }
  | { mode: "dispatch"; claimed: string[]; mostActive: number };

function newRequest(t: Extract<RaceTask, { mode: "submit" }>): RequestRecord {
  return {
    id: `req_${ulid()}`,
    tenant: t.tenant,
    queue: t.queue,
    status: "QUEUED",
    priority: 0,
    input: { race: true },
    metadata: {},
    webhook: null,
    idempotencyKey: t.key,
    createdAt: t.createdAt,
    startedAt: null,
    finishedAt: null,
    updatedAt: 0,
    attempt: 0,
    maxAttempts: 1,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 3600,
    expiresAt: t.createdAt + 3_600_000,
    progress: null,
    error: null,
    jobRef: null,
  };
}

async function submitRace(
  store: SqliteRequestStore,
  t: Extract<RaceTask, { mode: "submit" }>,
): Promise<RaceReport> {
  const created: string[] = [];
  const replayed: string[] = [];
  for (let i = 0; i < t.count; i++) {
    const outcome = await store.submit(
      newRequest(t),
      { key: t.key, bodyHash: t.bodyHash },
      { maxQueued: 1_000_000, retryAfterSeconds: 1 },
    );
    (outcome.kind === "created" ? created : replayed).push(outcome.request.id);
  }
  return { mode: "submit", created, replayed };
}

async function dispatchRace(
  store: SqliteRequestStore,
  t: Extract<RaceTask, { mode: "dispatch" }>,
): Promise<RaceReport> {
  const claimed: string[] = [];
  let mostActive = 0;
  // A store that leaks slots would leave this loop waiting on "full" forever.
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (Date.now() > deadline) throw new Error("dispatcher stopped making progress");
    const claim = await store.claimNext(t.queue, { maxRunning: t.maxRunning }, t.now);
    if (claim.kind === "empty") break;
    if (claim.kind !== "started") {
      await new Promise((resolve) => setTimeout(resolve, 1));
      continue;
    }
    claimed.push(claim.request.id);
    // Counted from the rows in one read snapshot: what really holds a slot at this instant.
    const active = (await store.recount())[t.queue]?.running ?? 0;
    mostActive = Math.max(mostActive, active);
    // Hold the slot a moment so the other processes find the queue full now and then.
    await new Promise((resolve) => setTimeout(resolve, Math.floor(Math.random() * 3)));
    const { id, attempt } = claim.request;
    await store.transition({ id, from: ["STARTING"], to: "RUNNING", attempt });
    await store.transition({ id, from: ["RUNNING"], to: "SUCCEEDED", attempt });
  }
  return { mode: "dispatch", claimed, mostActive };
}

async function main(): Promise<void> {
  const task = JSON.parse(process.argv[2] ?? "null") as RaceTask;
  const store = new SqliteRequestStore(task.path);
  const lines = createInterface({ input: process.stdin });
  const go = new Promise<void>((resolve) => {
    lines.on("line", (line) => {
      if (line.trim() === "go") resolve();
    });
  });
  process.stdout.write("ready\n");
  await go;
  lines.close();
  const report =
    task.mode === "submit" ? await submitRace(store, task) : await dispatchRace(store, task);
  store.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await main();
