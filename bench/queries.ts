/**
 * Bench item 4 (issue 6): what a list page and a queue position cost as the table grows.
 *
 * - Embedded: two SQLite stores of the same shape (one queue, three tenants, a backlog of
 *   QUEUED requests behind older finished ones) at a small and a large size, seeded in one
 *   transaction in the store's own schema, then served by a real server (TestServer) and
 *   read over HTTP: list(limit=100) first page, a page without QUEUED items, a deep page by
 *   cursor, and the status of a QUEUED request near the head and deep in the queue. The
 *   position statement is also timed in-process at growing depths, and the query plans of
 *   the list and position statements are reported.
 * - AWS: the same shape on moto through DynamoRequestStore (items written with
 *   BatchWriteItem in the store's item format, checked against items the store wrote
 *   itself). moto's latency does not model DynamoDB (its index queries walk the whole
 *   table), so the figure that counts there is what DynamoDB would bill: items read and
 *   read request units from item sizes (capacity.ts).
 */
import { rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AttributeValue, DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { BatchWriteCommand, DynamoDBDocumentClient, GetCommand } from "@aws-sdk/lib-dynamodb";
import Database from "better-sqlite3";
import { ulid } from "ulidx";
import { createTable } from "../functions/adapters/aws/bootstrap.ts";
import { INDEXES, TABLE_KEY, TTL_ATTRIBUTE } from "../functions/adapters/aws/definitions.ts";
import { DynamoRequestStore } from "../functions/adapters/aws/dynamo-request-store.ts";
import {
  EXPLAINABLE_QUERIES,
  SqliteRequestStore,
} from "../functions/adapters/embedded/sqlite-store.ts";
import { type RequestRecord, RequestStatus, readyOrderKey } from "../functions/core/request.ts";
import { encodeListCursor } from "../functions/core/store-support.ts";
import { TestServer } from "../test/helpers/server.ts";
import { CapacityCalculator, type DynamoInput, itemSize, readUnits } from "./capacity.ts";
import { PRICES } from "./prices.ts";
import type { BenchContext, BenchSection, SummaryRow } from "./section.ts";
import { type Distribution, distribution, ms, ratioText } from "./stats.ts";

const QUEUE = "q";
/** Queue of the DynamoDB format check's own requests. */
const FORMAT_CHECK_QUEUE = "format-check";
const LIMIT = 100;
/** Where the "deep" status probe sits (capped by the queue's length at small sizes). */
const DEEP_TARGET = 50_000;
const SHALLOW_TARGET = 10;
const RETENTION_DAYS = 30;
/** Tenants and their share of the requests; the lists are read as alice. */
const TENANTS: ReadonlyArray<readonly [string, number]> = [
  ["alice", 0.5],
  ["bob", 0.3],
  ["carol", 0.2],
];
const TOKENS = "t-alice:alice,t-bob:bob,t-carol:carol";

/** mulberry32: a small seeded PRNG, so every run seeds the same shape. */
export function seededRandom(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- the data set

interface Dataset {
  records: RequestRecord[];
  /** QUEUED requests in start order: index = position. */
  startOrder: RequestRecord[];
  statusCounts: Record<string, number>;
}

/**
 * `n` requests of one queue, oldest first: the oldest 40 % finished (SUCCEEDED 70 %, FAILED,
 * CANCELLED, EXPIRED 10 % each), the newest 60 % a backlog (95 % QUEUED, 10 % of those at
 * priority 5, the rest cancelled while waiting). Tenants alice/bob/carol 50/30/20 %.
 */
function makeDataset(n: number, seed: number, now: number): Dataset {
  const random = seededRandom(seed);
  const records: RequestRecord[] = [];
  const statusCounts: Record<string, number> = {};
  const spacingMs = 20;
  for (let i = 0; i < n; i++) {
    const createdAt = now - (n - i) * spacingMs;
    const pick = random();
    let acc = 0;
    let tenant = "alice";
    for (const [name, share] of TENANTS) {
      acc += share;
      if (pick < acc) {
        tenant = name;
        break;
      }
    }
    let status: RequestStatus;
    const r = random();
    if (i < 0.4 * n) {
      status =
        r < 0.7
          ? RequestStatus.SUCCEEDED
          : r < 0.8
            ? RequestStatus.FAILED
            : r < 0.9
              ? RequestStatus.CANCELLED
              : RequestStatus.EXPIRED;
    } else {
      status = r < 0.95 ? RequestStatus.QUEUED : RequestStatus.CANCELLED;
    }
    statusCounts[status] = (statusCounts[status] ?? 0) + 1;
    const priority = status === RequestStatus.QUEUED && random() < 0.1 ? 5 : 0;
    const ran = status === RequestStatus.SUCCEEDED || status === RequestStatus.FAILED;
    const finished = status !== RequestStatus.QUEUED;
    const finishedAt = finished ? Math.min(now, createdAt + 60_000) : null;
    const queueTtlSeconds = 30 * 86_400;
    records.push({
      id: `req_${ulid(createdAt, random)}`,
      tenant,
      queue: QUEUE,
      status,
      priority,
      input: { epochs: 3, learningRate: 0.5, seed: i },
      metadata: { team: "search" },
      webhook: null,
      idempotencyKey: null,
      createdAt,
      startedAt: ran ? createdAt + 1000 : null,
      finishedAt,
      updatedAt: finishedAt ?? createdAt,
      attempt: ran ? 1 : 0,
      maxAttempts: 3,
      cancelRequested: status === RequestStatus.CANCELLED,
      timeoutSeconds: 3600,
      queueTtlSeconds,
      expiresAt: createdAt + queueTtlSeconds * 1000,
      progress:
        status === RequestStatus.SUCCEEDED
          ? { current: 3, total: 3, message: "epoch 3", updatedAt: createdAt + 50_000 }
          : null,
      error:
        status === RequestStatus.FAILED
          ? { code: "job_failed", message: "attempt 1 of 3 failed" }
          : status === RequestStatus.CANCELLED
            ? { code: "cancelled", message: "cancelled by the caller" }
            : status === RequestStatus.EXPIRED
              ? { code: "expired", message: "waited longer than its queue TTL" }
              : null,
      jobRef: null,
    });
  }
  const startOrder = records
    .filter((r) => r.status === RequestStatus.QUEUED)
    .sort((a, b) => (readyOrderKey(a) < readyOrderKey(b) ? -1 : 1));
  return { records, startOrder, statusCounts };
}

/**
 * The QUEUED request of `tenant` whose position is nearest `target` (a status read by
 * another tenant is a 404, so the probes must be alice's own requests).
 */
export function atPosition(
  ds: Dataset,
  target: number,
  tenant = "alice",
): { record: RequestRecord; position: number } {
  let best = -1;
  ds.startOrder.forEach((r, i) => {
    if (r.tenant === tenant && (best < 0 || Math.abs(i - target) < Math.abs(best - target))) {
      best = i;
    }
  });
  if (best < 0) throw new Error(`no QUEUED request of ${tenant}`);
  return { record: ds.startOrder[best] as RequestRecord, position: best };
}

/**
 * A cursor into alice's finished requests (40 % from the oldest): what nextCursor holds
 * after the page ending at that request (store-support.ts encodes it so), without reading
 * hundreds of pages first.
 */
function deepCursor(ds: Dataset): string {
  const alice = ds.records.filter((r) => r.tenant === "alice");
  const at = alice[Math.floor(alice.length * 0.2)] as RequestRecord;
  return encodeListCursor(at);
}

// ---------------------------------------------------------------- sampling

interface Sampled {
  dist: Distribution;
  samples: number[];
}

/** Times `fn` after up to `warm` unmeasured calls, up to `max` samples or `budgetMs` (≥ `min`). */
async function sample(
  fn: () => Promise<void>,
  opts: { max: number; min: number; budgetMs: number; warm: number },
): Promise<Sampled> {
  // Warm-up (JIT, statement cache, connections): `warm` calls, cut short after a second.
  const warmStart = performance.now();
  for (let i = 0; i < opts.warm && (i === 0 || performance.now() - warmStart < 1000); i++) {
    await fn();
  }
  const samples: number[] = [];
  const started = performance.now();
  while (
    samples.length < opts.max &&
    (samples.length < opts.min || performance.now() - started < opts.budgetMs)
  ) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return { dist: distribution(samples), samples };
}

// ---------------------------------------------------------------- embedded (SQLite)

/** The `requests` row of a record, as SqliteRequestStore's toRow writes it. */
function sqliteRow(r: RequestRecord): Record<string, unknown> {
  const json = (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));
  return {
    id: r.id,
    tenant: r.tenant,
    queue: r.queue,
    status: r.status,
    priority: r.priority,
    input: JSON.stringify(r.input) ?? "null",
    metadata: JSON.stringify(r.metadata ?? {}),
    webhook: json(r.webhook),
    idempotency_key: r.idempotencyKey,
    created_at: r.createdAt,
    started_at: r.startedAt,
    finished_at: r.finishedAt,
    updated_at: r.updatedAt,
    attempt: r.attempt,
    max_attempts: r.maxAttempts,
    cancel_requested: r.cancelRequested ? 1 : 0,
    timeout_seconds: r.timeoutSeconds,
    queue_ttl_seconds: r.queueTtlSeconds,
    expires_at: r.expiresAt,
    progress: json(r.progress),
    error: json(r.error),
    job_ref: r.jobRef,
  };
}

/**
 * Writes the data set into a fresh store at `dbPath`: the store creates its schema, the rows
 * go in through a second connection in ONE transaction (the store's API commits once per
 * request: ~0.3 ms each, 30 s for 100,000), and the store's own recount sets the counters.
 * A sample read back through the store must equal what was written.
 */
function seedSqlite(dbPath: string, ds: Dataset): number {
  const t0 = performance.now();
  new SqliteRequestStore(dbPath).close();
  const db = new Database(dbPath);
  try {
    db.pragma("journal_mode = WAL");
    const columns = Object.keys(sqliteRow(ds.records[0] as RequestRecord));
    const insert = db.prepare(
      `INSERT INTO requests (${columns.join(", ")}) VALUES (${columns.map((c) => `@${c}`).join(", ")})`,
    );
    db.transaction(() => {
      for (const r of ds.records) insert.run(sqliteRow(r));
    })();
  } finally {
    db.close();
  }
  const store = new SqliteRequestStore(dbPath);
  try {
    store.recount({ fix: true });
  } finally {
    store.close();
  }
  return performance.now() - t0;
}

async function checkSqliteSeed(dbPath: string, ds: Dataset): Promise<void> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const step = Math.max(1, Math.floor(ds.records.length / 25));
    for (let i = 0; i < ds.records.length; i += step) {
      const want = ds.records[i] as RequestRecord;
      const got = await store.get(want.id);
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        throw new Error(`seeded row ${want.id} reads back differently: ${JSON.stringify(got)}`);
      }
    }
    const counts = await store.queueCounts(QUEUE);
    if (counts.queued !== ds.startOrder.length) {
      throw new Error(`counters say ${counts.queued} queued, seeded ${ds.startOrder.length}`);
    }
  } finally {
    store.close();
  }
}

interface PositionTiming {
  depth: number;
  p50Us: number;
  p99Us: number;
}

/** store.position in-process at growing depths (no HTTP): the cost curve of the count. */
async function positionCurve(dbPath: string, ds: Dataset): Promise<PositionTiming[]> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const depths = [0, 10, 100, 1_000, 10_000, 50_000, 100_000].filter(
      (d) => d < ds.startOrder.length,
    );
    depths.push(ds.startOrder.length - 1);
    const out: PositionTiming[] = [];
    for (const depth of [...new Set(depths)]) {
      const r = ds.startOrder[depth] as RequestRecord;
      const got = await store.position(r);
      if (got !== depth) throw new Error(`position of the ${depth}th request read ${got}`);
      const { dist } = await sample(
        async () => {
          await store.position(r);
        },
        { max: 30, min: 5, budgetMs: 1500, warm: 2 },
      );
      out.push({ depth, p50Us: dist.p50 * 1000, p99Us: dist.p99 * 1000 });
    }
    return out;
  } finally {
    store.close();
  }
}

/**
 * store.list in-process (no HTTP, no positions): the page without QUEUED items and the deep
 * cursor page, p50 over many calls — the store's own share of the list latency.
 */
async function listInProcess(dbPath: string, ds: Dataset): Promise<Record<string, number>> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const alice = { tenant: "alice", queue: QUEUE, limit: LIMIT };
    const out: Record<string, number> = {};
    for (const [key, query] of [
      ["listSucceeded", { ...alice, statuses: [RequestStatus.SUCCEEDED] }],
      ["listDeep", { ...alice, cursor: deepCursor(ds) }],
    ] as const) {
      const { dist } = await sample(
        async () => {
          await store.list(query);
        },
        { max: 200, min: 20, budgetMs: 1000, warm: 20 },
      );
      out[key] = dist.p50;
    }
    return out;
  } finally {
    store.close();
  }
}

/** B-tree levels of the table and its list/ready indexes (SQLite's dbstat), null without it. */
function btreeLevels(dbPath: string): Record<string, number> | null {
  const db = new Database(dbPath, { readonly: true });
  try {
    const rows = db
      .prepare(
        `SELECT name, max(length(path) - length(replace(path, '/', ''))) AS levels FROM dbstat
         WHERE name IN ('requests', 'requests_list', 'requests_list_status', 'requests_ready')
         GROUP BY name`,
      )
      .all() as { name: string; levels: number }[];
    return Object.fromEntries(rows.map((r) => [r.name, r.levels]));
  } catch {
    return null;
  } finally {
    db.close();
  }
}

function explainAll(dbPath: string): Record<string, string[]> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const wanted = ["listAll", "listAllAfter", "listStatus", "listStatusAfter", "position"];
    return Object.fromEntries(
      EXPLAINABLE_QUERIES.filter((q) => wanted.includes(q)).map((q) => [q, store.explain(q)]),
    );
  } finally {
    store.close();
  }
}

interface HttpMeasure {
  key: string;
  label: string;
  dist: Distribution;
  /** Items in the page (list) and how many were QUEUED (a position each). */
  items?: number;
  queuedItems?: number;
  /** Position the status answer carried (status probes). */
  position?: number;
}

interface EmbeddedSize {
  n: number;
  statusCounts: Record<string, number>;
  queued: number;
  seedMs: number;
  positionCurve: PositionTiming[];
  /** store.list p50 in-process (ms), by measure key. */
  listInProcess: Record<string, number>;
  btreeLevels: Record<string, number> | null;
  http: HttpMeasure[];
}

async function measureEmbeddedSize(ctx: BenchContext, n: number): Promise<EmbeddedSize> {
  const dir = await mkdtemp(join(tmpdir(), "longrun-bench-queries-"));
  const dbPath = join(dir, "longrun.db");
  const ds = makeDataset(n, 4 + n, Date.now());
  const seedMs = seedSqlite(dbPath, ds);
  await checkSqliteSeed(dbPath, ds);
  ctx.log(`queries: seeded ${n} requests into SQLite in ${ms(seedMs)}`);
  const curve = await positionCurve(dbPath, ds);
  const inProcess = await listInProcess(dbPath, ds);
  const levels = btreeLevels(dbPath);

  const server = new TestServer({
    dataDir: dir,
    tokens: TOKENS,
    queues: {
      [QUEUE]: {
        // The server starts the head of the queue (maxRunning ≥ 1): a job that only waits
        // keeps that one slot, so the backlog stays as seeded. It exits on the SIGTERM of a
        // graceful server stop.
        command: [process.execPath, "-e", "setTimeout(() => {}, 3_600_000)"],
        maxQueued: 10_000_000,
        maxRunning: 1,
        timeoutSeconds: 3600,
        maxAttempts: 1,
        queueTtlSeconds: 30 * 86_400,
        cancelGraceSeconds: 1,
        retentionDays: 3650,
      },
    },
  });
  const http: HttpMeasure[] = [];
  try {
    await server.start();
    const get = async (path: string): Promise<{ status: number; body: string }> => {
      const res = await fetch(server.url + path, {
        headers: { authorization: "Bearer t-alice" },
      });
      return { status: res.status, body: await res.text() };
    };
    const budget = ctx.quick ? 800 : 4000;
    const list = async (key: string, label: string, query: string) => {
      const path = `/v1/queues/${QUEUE}/requests?limit=${LIMIT}${query}`;
      const first = await get(path);
      if (first.status !== 200) throw new Error(`${path}: ${first.status} ${first.body}`);
      const page = JSON.parse(first.body) as { items: { status: string; position: unknown }[] };
      const { dist } = await sample(
        async () => {
          await get(path);
        },
        { max: 50, min: 5, budgetMs: budget, warm: 10 },
      );
      http.push({
        key,
        label,
        dist,
        items: page.items.length,
        queuedItems: page.items.filter((i) => i.status === "QUEUED").length,
      });
    };
    await list("listFirst", "list, first page (newest: the backlog)", "");
    await list("listSucceeded", "list status=SUCCEEDED, first page", "&status=SUCCEEDED");
    await list(
      "listDeep",
      "list, deep page by cursor (finished requests)",
      `&cursor=${deepCursor(ds)}`,
    );
    await list("listQueued", "list status=QUEUED, first page", "&status=QUEUED");
    const status = async (key: string, label: string, target: number) => {
      // The head may have been started by the server: the seeded position shifts by one.
      const { record } = atPosition(ds, target);
      const path = `/v1/requests/${record.id}`;
      const answer = await get(path);
      const body = JSON.parse(answer.body) as { status: string; position: number };
      if (answer.status !== 200 || body.status !== RequestStatus.QUEUED) {
        throw new Error(`${path}: ${answer.status} ${answer.body}`);
      }
      const { dist } = await sample(
        async () => {
          await get(path);
        },
        { max: 50, min: 5, budgetMs: budget, warm: 10 },
      );
      http.push({ key, label, dist, position: body.position });
    };
    await status("statusShallow", `status, QUEUED near the head`, SHALLOW_TARGET);
    await status("statusDeep", `status, QUEUED deep in the queue`, DEEP_TARGET);
  } finally {
    await server.stop().catch(() => {});
    await server.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    n,
    statusCounts: ds.statusCounts,
    queued: ds.startOrder.length,
    seedMs,
    positionCurve: curve,
    listInProcess: inProcess,
    btreeLevels: levels,
    http,
  };
}

// ---------------------------------------------------------------- AWS (DynamoDB on moto)

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "bench", secretAccessKey: "bench" };

function pad15(n: number): string {
  return String(n).padStart(15, "0");
}

/** JSON round trip, as the store's `plain` does. */
function plain<T>(value: T): T {
  return value === null || value === undefined
    ? (null as T)
    : (JSON.parse(JSON.stringify(value)) as T);
}

/**
 * The item DynamoRequestStore holds for `r` after the writes that brought it to its status
 * (toItem at submit; a status change sets statusPk, drops the ready and sweep keys and sets
 * the TTL once terminal). `rev` counts writes and is left out of the format check.
 */
function dynamoItem(r: RequestRecord): Record<string, unknown> {
  const item: Record<string, unknown> = {
    [TABLE_KEY.partitionKey]: `REQ#${r.id}`,
    [TABLE_KEY.sortKey]: "REQ",
    id: r.id,
    tenant: r.tenant,
    queue: r.queue,
    status: r.status,
    priority: r.priority,
    input: JSON.stringify(r.input) ?? "null",
    metadata: plain(r.metadata ?? {}),
    webhook: plain(r.webhook),
    idempotencyKey: r.idempotencyKey,
    createdAt: r.createdAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    updatedAt: r.updatedAt,
    attempt: r.attempt,
    maxAttempts: r.maxAttempts,
    cancelRequested: r.cancelRequested,
    timeoutSeconds: r.timeoutSeconds,
    queueTtlSeconds: r.queueTtlSeconds,
    expiresAt: r.expiresAt,
    progress: plain(r.progress),
    error: plain(r.error),
    jobRef: r.jobRef,
    rev: 0,
    [INDEXES.list.partitionKey]: `${r.tenant}#${r.queue}`,
    [INDEXES.list.sortKey]: `${pad15(r.createdAt)}#${r.id}`,
    [INDEXES.listByStatus.partitionKey]: `${r.tenant}#${r.queue}#${r.status}`,
  };
  if (r.status === RequestStatus.QUEUED) {
    item[INDEXES.ready.partitionKey] = `READY#${r.queue}`;
    item[INDEXES.ready.sortKey] = readyOrderKey(r);
    item[INDEXES.sweep.partitionKey] = `QUEUED#${r.queue}`;
    item[INDEXES.sweep.sortKey] = `${pad15(r.expiresAt)}#${r.id}`;
  } else {
    const finishedAt = r.finishedAt ?? r.updatedAt;
    item[TTL_ATTRIBUTE] = Math.floor(finishedAt / 1000) + RETENTION_DAYS * 86_400;
  }
  return item;
}

function withoutRev(item: Record<string, unknown> | undefined): string {
  if (!item) return "null";
  const { rev: _rev, ...rest } = item;
  return JSON.stringify(
    Object.fromEntries(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1))),
  );
}

/**
 * Drives four requests through the store's own writes (QUEUED; QUEUED → CANCELLED;
 * QUEUED → EXPIRED; QUEUED → STARTING → RUNNING → SUCCEEDED) and checks that
 * {@link dynamoItem} builds exactly the items the store wrote: the seeded table then has
 * the store's format, not an imitation of it.
 */
async function checkDynamoFormat(
  store: DynamoRequestStore,
  doc: DynamoDBDocumentClient,
  table: string,
): Promise<void> {
  const now = Date.now();
  // A queue of its own, so that the seeded queue's positions and lists stay as planned.
  const ds = makeDataset(8, 99, now);
  const limits = { maxQueued: 1_000_000, retryAfterSeconds: 1 };
  const plans: RequestStatus[] = [
    RequestStatus.QUEUED,
    RequestStatus.CANCELLED,
    RequestStatus.EXPIRED,
    RequestStatus.SUCCEEDED,
  ];
  for (const [i, target] of plans.entries()) {
    const base = {
      ...(ds.records[i] as RequestRecord),
      id: `req_${ulid()}`,
      queue: FORMAT_CHECK_QUEUE,
      status: RequestStatus.QUEUED,
      startedAt: null,
      finishedAt: null,
      attempt: 0,
      cancelRequested: false,
      progress: null,
      error: null,
      updatedAt: now,
    };
    await store.submit(base, null, limits);
    const at = now + 1000;
    if (target === RequestStatus.CANCELLED || target === RequestStatus.EXPIRED) {
      await store.transition({
        id: base.id,
        from: [RequestStatus.QUEUED],
        to: target,
        set: {
          finishedAt: at,
          updatedAt: at,
          cancelRequested: target === RequestStatus.CANCELLED,
          error: {
            code: target === RequestStatus.CANCELLED ? "cancelled" : "expired",
            message: "x",
          },
        },
      });
    } else if (target === RequestStatus.SUCCEEDED) {
      await store.transition({
        id: base.id,
        from: [RequestStatus.QUEUED],
        to: RequestStatus.STARTING,
        set: { attempt: 1, updatedAt: at },
      });
      await store.transition({
        id: base.id,
        from: [RequestStatus.STARTING],
        to: RequestStatus.RUNNING,
        set: { startedAt: at, updatedAt: at, jobRef: null },
      });
      await store.transition({
        id: base.id,
        from: [RequestStatus.RUNNING],
        to: RequestStatus.SUCCEEDED,
        set: {
          finishedAt: at,
          updatedAt: at,
          progress: { current: 3, total: 3, message: "done", updatedAt: at },
        },
      });
    }
    const record = await store.get(base.id);
    if (!record) throw new Error(`format check: ${base.id} vanished`);
    const raw = await doc.send(
      new GetCommand({
        TableName: table,
        Key: { [TABLE_KEY.partitionKey]: `REQ#${base.id}`, [TABLE_KEY.sortKey]: "REQ" },
        ConsistentRead: true,
      }),
    );
    const mine = withoutRev(dynamoItem(record));
    const theirs = withoutRev(raw.Item);
    if (mine !== theirs) {
      throw new Error(
        `the seeded item format differs from the store's for a ${target} request:\n store: ${theirs}\n bench: ${mine}`,
      );
    }
  }
}

/** BatchWriteItem, 25 items a call, 4 calls in flight, unprocessed items sent again. */
async function batchWrite(
  doc: DynamoDBDocumentClient,
  table: string,
  items: Record<string, unknown>[],
): Promise<number> {
  const batches: Record<string, unknown>[][] = [];
  for (let i = 0; i < items.length; i += 25) batches.push(items.slice(i, i + 25));
  let next = 0;
  let calls = 0;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < batches.length) {
        let pending = (batches[next++] as Record<string, unknown>[]).map((Item) => ({
          PutRequest: { Item },
        }));
        while (pending.length > 0) {
          calls++;
          const out = await doc.send(new BatchWriteCommand({ RequestItems: { [table]: pending } }));
          pending = (out.UnprocessedItems?.[table] ?? []) as typeof pending;
        }
      }
    }),
  );
  return calls;
}

interface Usage {
  calls: Record<string, number>;
  /** Items DynamoDB read (ScannedCount of Queries, items of Gets). */
  itemsRead: number;
  /** Read request units from item sizes (capacity.ts). */
  rru: number;
}

/** A DynamoDB client whose calls are counted and whose read units are computed. */
function meteredClient(endpoint: string, calculator: CapacityCalculator) {
  const client = new DynamoDBClient({ endpoint, region: REGION, credentials: CREDENTIALS });
  let usage: Usage = { calls: {}, itemsRead: 0, rru: 0 };
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const op = String(context.commandName ?? "?").replace(/Command$/, "");
      usage.calls[op] = (usage.calls[op] ?? 0) + 1;
      return calculator.measure(
        op,
        args.input as DynamoInput,
        async () => {
          const result = await next(args);
          const out = result.output as { ScannedCount?: number; Item?: unknown };
          usage.itemsRead += out.ScannedCount ?? (out.Item ? 1 : 0);
          return result;
        },
        (units) => {
          usage.rru += units.read;
        },
      );
    },
    { step: "build", name: "benchQueriesCapacity", priority: "low" },
  );
  return {
    client,
    reset(): void {
      usage = { calls: {}, itemsRead: 0, rru: 0 };
    },
    take(): Usage {
      const u = usage;
      usage = { calls: {}, itemsRead: 0, rru: 0 };
      return u;
    },
  };
}

interface DynamoMeasure {
  key: string;
  label: string;
  /** moto latency (not DynamoDB's) of one unmetered call; null in a quick run. */
  motoMs: Distribution | null;
  usage: Usage;
  items?: number;
  queuedItems?: number;
  position?: number;
}

interface DynamoSize {
  n: number;
  queued: number;
  seedMs: number;
  seedCalls: number;
  measures: DynamoMeasure[];
  /** Read-index entry size in bytes (KEYS_ONLY: table keys + index keys). */
  readyEntryBytes: number;
  /** Positions of the QUEUED items on alice's first list page. */
  firstPageQueuedDepths: number[];
}

async function measureDynamoSize(
  ctx: BenchContext,
  n: number,
  checkFormat: boolean,
): Promise<DynamoSize> {
  const endpoint = ctx.motoEndpoint;
  const plumbing = new DynamoDBClient({ endpoint, region: REGION, credentials: CREDENTIALS });
  const table = `bench-queries-${Date.now().toString(36)}-${n}`;
  await createTable(plumbing, table);
  const shape = {
    partitionKey: TABLE_KEY.partitionKey,
    sortKey: TABLE_KEY.sortKey,
    indexes: Object.values(INDEXES),
  };
  const metered = meteredClient(endpoint, new CapacityCalculator(plumbing, () => shape));
  const queues = () => [QUEUE, FORMAT_CHECK_QUEUE];
  const plainStore = new DynamoRequestStore({ client: plumbing, tableName: table, queues });
  const meteredStore = new DynamoRequestStore({ client: metered.client, tableName: table, queues });
  const doc = DynamoDBDocumentClient.from(plumbing, {
    marshallOptions: { removeUndefinedValues: true },
  });
  // Once per run is enough: the format does not depend on the table.
  if (checkFormat) await checkDynamoFormat(plainStore, doc, table);

  const ds = makeDataset(n, 4 + n, Date.now());
  const t0 = performance.now();
  const items = ds.records.map(dynamoItem);
  // The queue's counters, as the submits would have left them.
  items.push({
    [TABLE_KEY.partitionKey]: `QUEUE#${QUEUE}`,
    [TABLE_KEY.sortKey]: "COUNTERS",
    queued: ds.startOrder.length,
    running: 0,
  });
  const seedCalls = await batchWrite(doc, table, items);
  const seedMs = performance.now() - t0;
  ctx.log(`queries: seeded ${n} requests into DynamoDB (moto) in ${ms(seedMs)}`);

  const readyEntry = await plumbing.send(
    new GetItemCommand({
      TableName: table,
      Key: {
        [TABLE_KEY.partitionKey]: { S: `REQ#${(ds.startOrder[0] as RequestRecord).id}` },
        [TABLE_KEY.sortKey]: { S: "REQ" },
      },
    }),
  );
  const keys = [
    TABLE_KEY.partitionKey,
    TABLE_KEY.sortKey,
    INDEXES.ready.partitionKey,
    INDEXES.ready.sortKey,
  ];
  const entry: Record<string, AttributeValue> = {};
  for (const k of keys) {
    const v = readyEntry.Item?.[k];
    if (v) entry[k] = v;
  }
  const readyEntryBytes = itemSize(entry);

  const measures: DynamoMeasure[] = [];
  /** One metered call (RRU, items, calls) and `samples` unmetered ones (moto latency). */
  const run = async <T>(
    key: string,
    label: string,
    fn: (store: DynamoRequestStore) => Promise<T>,
    samples: number,
    extra: (result: T) => Partial<DynamoMeasure> = () => ({}),
  ): Promise<T> => {
    const dist =
      samples > 0
        ? (
            await sample(
              async () => {
                await fn(plainStore);
              },
              { max: samples, min: samples, budgetMs: 0, warm: 0 },
            )
          ).dist
        : null;
    metered.reset();
    const result = await fn(meteredStore);
    measures.push({ key, label, motoMs: dist, usage: metered.take(), ...extra(result) });
    return result;
  };
  const alice = { tenant: "alice", queue: QUEUE, limit: LIMIT };
  // One unmetered call for moto's latency (up to seconds per call; not DynamoDB's), none
  // in a quick run.
  const repeats = ctx.quick ? 0 : 1;
  const firstPage = await run(
    "listFirst",
    "store.list, first page",
    (s) => s.list(alice),
    repeats,
    (page) => ({
      items: page.items.length,
      queuedItems: page.items.filter((r) => r.status === RequestStatus.QUEUED).length,
    }),
  );
  await run(
    "listSucceeded",
    "store.list status=SUCCEEDED, first page",
    (s) => s.list({ ...alice, statuses: [RequestStatus.SUCCEEDED] }),
    repeats,
  );
  await run(
    "listDeep",
    "store.list, deep page by cursor",
    (s) => s.list({ ...alice, cursor: deepCursor(ds) }),
    repeats,
  );
  for (const [key, label, target] of [
    ["positionShallow", "position, near the head", SHALLOW_TARGET],
    ["positionDeep", "position, deep in the queue", DEEP_TARGET],
  ] as const) {
    const { record, position } = atPosition(ds, target);
    const got = await run(
      key,
      label,
      (s) => s.position(record),
      repeats,
      () => ({ position }),
    );
    if (got !== position) throw new Error(`dynamo position of #${position} read ${got}`);
  }
  const depthOf = new Map(ds.startOrder.map((r, i) => [r.id, i]));
  return {
    n,
    queued: ds.startOrder.length,
    seedMs,
    seedCalls,
    measures,
    readyEntryBytes,
    firstPageQueuedDepths: firstPage.items.flatMap((r) => {
      const d = depthOf.get(r.id);
      return d === undefined ? [] : [d];
    }),
  };
}

/**
 * Read units of an exact COUNT over `depth` ready-index entries of `entryBytes` each: one
 * Query page per MB read, each rounded up to 4 KB and halved (GSI reads are eventually
 * consistent).
 */
function positionRru(depth: number, entryBytes: number): number {
  const pageBytes = 1024 * 1024;
  let bytes = depth * entryBytes;
  let units = 0;
  do {
    const chunk = Math.min(bytes, pageBytes);
    units += readUnits(chunk, false);
    bytes -= chunk;
  } while (bytes > 0);
  return units;
}

// ---------------------------------------------------------------- report

function fmtInt(n: number): string {
  return n.toLocaleString("en-US");
}

function fmtRru(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

function p50p99(d: Distribution): string {
  return `${ms(d.p50)} / ${ms(d.p99)}`;
}

export const queriesSection: BenchSection = {
  key: "queries",
  title: "List and position cost at table size",
  async run(ctx) {
    const small = 1_000;
    const large = ctx.quick ? 10_000 : 100_000;
    const awsSmall = 1_000;
    const awsLarge = ctx.quick ? 2_000 : 10_000;

    const embedded: EmbeddedSize[] = [];
    for (const n of [small, large]) embedded.push(await measureEmbeddedSize(ctx, n));
    const plans = await (async () => {
      const dir = await mkdtemp(join(tmpdir(), "longrun-bench-plans-"));
      try {
        return explainAll(join(dir, "plans.db"));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();

    const aws: DynamoSize[] = [];
    for (const n of [awsSmall, awsLarge]) {
      aws.push(await measureDynamoSize(ctx, n, n === awsSmall));
    }

    const [es, el] = embedded as [EmbeddedSize, EmbeddedSize];
    const [as, al] = aws as [DynamoSize, DynamoSize];
    const httpOf = (e: EmbeddedSize, key: string) => e.http.find((m) => m.key === key);
    const dynOf = (d: DynamoSize, key: string) => d.measures.find((m) => m.key === key);

    // Per-position cost on DynamoDB: entries read × entry size (measured items agree).
    const entryBytes = al.readyEntryBytes;
    const rruPer1000 = positionRru(1000, entryBytes);
    const rruAt = (d: number) => positionRru(d, entryBytes);
    const queryCalls = (d: number) => Math.max(1, Math.ceil((d * entryBytes) / 2 ** 20));
    // The list endpoint's page on AWS, computed (moto needs seconds per COUNT query): the
    // page's measured read + one COUNT per QUEUED item at its own depth.
    const listEndpoint = (d: DynamoSize) => {
      const page = dynOf(d, "listFirst") as DynamoMeasure;
      return {
        queuedItems: d.firstPageQueuedDepths.length,
        rru: page.usage.rru + d.firstPageQueuedDepths.reduce((sum, x) => sum + rruAt(x), 0),
        calls: 1 + d.firstPageQueuedDepths.reduce((sum, x) => sum + queryCalls(x), 0),
        entriesRead: page.usage.itemsRead + d.firstPageQueuedDepths.reduce((sum, x) => sum + x, 0),
      };
    };
    const endpointSmall = listEndpoint(as);
    const endpointLarge = listEndpoint(al);
    const alFirst = dynOf(al, "listFirst") as DynamoMeasure;
    // The formula against what the metered deep probes read.
    const formulaCheck = aws.map((d) => {
      const m = dynOf(d, "positionDeep") as DynamoMeasure;
      return {
        n: d.n,
        position: m.position ?? 0,
        measuredRru: m.usage.rru,
        formulaRru: rruAt(m.position ?? 0),
        itemsRead: m.usage.itemsRead,
      };
    });

    const lines: string[] = [];
    lines.push(`## List and position cost at table size (issue 6 item 4)`);
    lines.push("");
    lines.push(
      `One queue, tenants alice/bob/carol (50/30/20 %), oldest 40 % finished, newest 60 % a backlog (95 % QUEUED, 10 % of those at priority 5). Lists are alice's, limit=${LIMIT}. Seeded in the stores' own formats (SQLite: one transaction, read back through the store; DynamoDB: BatchWriteItem of items checked equal to what the store itself writes).`,
    );
    lines.push("");
    lines.push(`### Embedded: SQLite over HTTP (real server), p50 / p99`);
    lines.push("");
    lines.push(
      `| measure | ${fmtInt(small)} stored | ${fmtInt(large)} stored | ratio (p50) | QUEUED items in page |`,
    );
    lines.push("|---|---:|---:|---:|---:|");
    for (const m of el.http) {
      const s = httpOf(es, m.key);
      if (!s) continue;
      const extra =
        m.queuedItems !== undefined
          ? `${s.queuedItems} / ${m.queuedItems}`
          : `position ${fmtInt(s.position ?? 0)} / ${fmtInt(m.position ?? 0)}`;
      lines.push(
        `| ${m.label} | ${p50p99(s.dist)} | ${p50p99(m.dist)} | ${ratioText(m.dist.p50, s.dist.p50)} | ${extra} |`,
      );
    }
    lines.push("");
    const levelsText =
      es.btreeLevels && el.btreeLevels
        ? Object.keys(el.btreeLevels)
            .sort()
            .map((k) => `${k} ${es.btreeLevels?.[k] ?? "?"}→${el.btreeLevels?.[k]} levels`)
            .join(", ")
        : "dbstat unavailable";
    const inProc = (key: string) =>
      `${ms(es.listInProcess[key] ?? 0)} vs ${ms(el.listInProcess[key] ?? 0)} (ratio ${ratioText(el.listInProcess[key] ?? 0, es.listInProcess[key] ?? 1)})`;
    lines.push(
      `The store's share, \`store.list\` in-process (no HTTP, p50 over up to 200 calls), ${fmtInt(small)} vs ${fmtInt(large)} stored: status=SUCCEEDED page ${inProc("listSucceeded")}, deep page ${inProc("listDeep")}.`,
    );
    lines.push("");
    lines.push(
      `Seeding: ${fmtInt(small)} rows in ${ms(es.seedMs)}, ${fmtInt(large)} rows in ${ms(el.seedMs)} (${fmtInt(el.queued)} QUEUED). Samples: up to 50 per figure within a time budget (n = ${el.http.map((m) => m.dist.n).join(", ")} at ${fmtInt(large)}).`,
    );
    lines.push("");
    lines.push(`Position count in-process (\`store.position\`, ${fmtInt(large)} stored):`);
    lines.push("");
    lines.push("| depth (position) | p50 | p99 |");
    lines.push("|---:|---:|---:|");
    for (const p of el.positionCurve) {
      lines.push(
        `| ${fmtInt(p.depth)} | ${(p.p50Us / 1000).toFixed(3)} ms | ${(p.p99Us / 1000).toFixed(3)} ms |`,
      );
    }
    const deepest = el.positionCurve.at(-1) as PositionTiming;
    const shallowest = el.positionCurve[0] as PositionTiming;
    const usPer1000 =
      deepest.depth > 0 ? ((deepest.p50Us - shallowest.p50Us) / deepest.depth) * 1000 : 0;
    lines.push("");
    lines.push(
      `≈ ${usPer1000.toFixed(0)} µs per 1,000 positions: the count walks the covering index entry by entry.`,
    );
    lines.push("");
    lines.push("Query plans (`EXPLAIN QUERY PLAN` via `SqliteRequestStore.explain`):");
    lines.push("");
    lines.push("```");
    for (const [name, plan] of Object.entries(plans)) lines.push(`${name}: ${plan.join(" | ")}`);
    lines.push("```");
    lines.push("");
    lines.push(`### AWS: DynamoRequestStore on moto`);
    lines.push("");
    lines.push(
      "Items read and read request units (RRU) are what DynamoDB bills and what its latency follows; RRU computed from item sizes (capacity.ts), eventually consistent on the indexes. moto's latency is shown but does not model DynamoDB: its index queries walk the whole table in Python.",
    );
    lines.push("");
    lines.push(
      `| measure | calls ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | items read ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | RRU ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | RRU ratio | moto latency ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} |`,
    );
    lines.push("|---|---:|---:|---:|---:|---:|");
    const callsOf = (u: Usage) => Object.values(u.calls).reduce((a, b) => a + b, 0);
    for (const m of al.measures) {
      const s = dynOf(as, m.key);
      if (!s) continue;
      const label =
        m.position !== undefined
          ? `${m.label} (#${fmtInt(s.position ?? 0)} / #${fmtInt(m.position)})`
          : m.label;
      lines.push(
        `| ${label} | ${callsOf(s.usage)} / ${callsOf(m.usage)} | ${fmtInt(s.usage.itemsRead)} / ${fmtInt(m.usage.itemsRead)} | ${fmtRru(s.usage.rru)} / ${fmtRru(m.usage.rru)} | ${ratioText(m.usage.rru, s.usage.rru)} | ${s.motoMs ? ms(s.motoMs.p50) : "–"} / ${m.motoMs ? ms(m.motoMs.p50) : "–"} |`,
      );
    }
    lines.push(
      `| list endpoint, first page (+ one position per QUEUED item: ${endpointSmall.queuedItems} / ${endpointLarge.queuedItems}), computed | ${endpointSmall.calls} / ${endpointLarge.calls} | ${fmtInt(endpointSmall.entriesRead)} / ${fmtInt(endpointLarge.entriesRead)} | ${fmtRru(endpointSmall.rru)} / ${fmtRru(endpointLarge.rru)} | ${ratioText(endpointLarge.rru, endpointSmall.rru)} | – |`,
    );
    lines.push("");
    lines.push(
      `The endpoint row is computed from the page's measured read plus the per-position cost below; the metered deep probes read exactly what that formula says (${formulaCheck.map((f) => `#${fmtInt(f.position)}: ${fmtInt(f.itemsRead)} entries, ${fmtRru(f.measuredRru)} RRU measured vs ${fmtRru(f.formulaRru)} formula`).join("; ")}). moto pages COUNT queries by its own size rule, so its call counts can exceed DynamoDB's one Query per MB.`,
    );
    lines.push("");
    lines.push(
      `Seeding on moto: ${fmtInt(awsSmall)} items in ${ms(as.seedMs)}, ${fmtInt(awsLarge)} in ${ms(al.seedMs)} (${al.seedCalls} BatchWriteItem calls).`,
    );
    lines.push("");
    const unitUsd = PRICES.dynamoReadRequestUnit.usd / PRICES.dynamoReadRequestUnit.per;
    lines.push(
      `Exact position on DynamoDB = a \`Select: COUNT\` Query of the ready index up to the request: every entry ahead is read (${entryBytes} B each, KEYS_ONLY), ≈ ${fmtRru(rruPer1000)} RRU per 1,000 positions:`,
    );
    lines.push("");
    lines.push("| depth | RRU per status call | Query calls | USD per million status calls |");
    lines.push("|---:|---:|---:|---:|");
    for (const d of [10, 1_000, 10_000, 50_000, 1_000_000]) {
      const rru = rruAt(d);
      lines.push(
        `| ${fmtInt(d)} | ${fmtRru(rru)} | ${queryCalls(d)} | ${(rru * unitUsd * 1e6).toFixed(2)} |`,
      );
    }
    lines.push("");

    const listNoQueued = (key: string) => {
      const s = httpOf(es, key) as HttpMeasure;
      const l = httpOf(el, key) as HttpMeasure;
      return ratioText(l.dist.p50, s.dist.p50);
    };
    const sFirst = httpOf(es, "listFirst") as HttpMeasure;
    const lFirst = httpOf(el, "listFirst") as HttpMeasure;
    const sDeepStatus = httpOf(el, "statusShallow") as HttpMeasure;
    const lDeepStatus = httpOf(el, "statusDeep") as HttpMeasure;
    lines.push("### What the code does, and the choice on each backend");
    lines.push("");
    lines.push(
      `- **List query itself is O(limit) on both backends.** SQLite: \`listAll\`/\`listStatus\` and their cursor forms are index range searches on \`requests_list\` / \`requests_list_status\` (tenant, queue[, status], created_at DESC, id DESC) with no sort step; a status filter runs one range per status and merges. DynamoDB: one Query of the \`list\` or \`listByStatus\` GSI with \`Limit = limit + 1\`. Pages without QUEUED items read ${LIMIT + 1} rows whatever the table holds: over HTTP their p50 ratios are ${listNoQueued("listSucceeded")} and ${listNoQueued("listDeep")}, in-process ${inProc("listSucceeded")} and ${inProc("listDeep")}; what growth there is comes per row, not per table: the list index is not covering, so each of the ${LIMIT + 1} rows is a rowid lookup into the table, and the B-trees are deeper at ${fmtInt(large)} rows (${levelsText}) — O(limit × log n). On DynamoDB the page reads at most ${LIMIT + 1} items: ${fmtRru((dynOf(as, "listFirst") as DynamoMeasure).usage.rru)} vs ${fmtRru(alFirst.usage.rru)} RRU at ${fmtInt(awsSmall)} vs ${fmtInt(awsLarge)} stored.`,
    );
    lines.push(
      `- **The list endpoint is not O(limit): it computes an exact position for every QUEUED item of the page** (functions/http/app.ts \`listRequests\`: \`Promise.all(page.items.filter(QUEUED).map(store.position))\`; the comment there says "bounded by limit, never by the table", but each position is itself O(position)). Newest-first pages of a backlog hold its deepest requests, so the first page costs limit × depth: ${ms(sFirst.dist.p50)} at ${fmtInt(small)} vs ${ms(lFirst.dist.p50)} at ${fmtInt(large)} stored (ratio ${ratioText(lFirst.dist.p50, sFirst.dist.p50)}); on DynamoDB ${fmtRru(endpointSmall.rru)} vs ${fmtRru(endpointLarge.rru)} RRU per page (${endpointSmall.calls} vs ${endpointLarge.calls} Query calls) at ${fmtInt(awsSmall)} vs ${fmtInt(awsLarge)} stored (and ≈ ${fmtRru(LIMIT * rruAt(DEEP_TARGET))} RRU per page with ${fmtInt(DEEP_TARGET)} waiting). This breaks SPEC §2 ("cost and latency depend on limit, never on how many requests the table holds").`,
    );
    lines.push(
      `- **Status \`position\` is an exact count, O(position), on both backends.** SQLite: two \`count(*)\` range scans of the covering partial index \`requests_ready\` (higher priority; same priority and earlier) — ≈ ${usPer1000.toFixed(0)} µs per 1,000 positions, ${ms(sDeepStatus.dist.p50)} at position ${fmtInt(sDeepStatus.position ?? 0)} vs ${ms(lDeepStatus.dist.p50)} at ${fmtInt(lDeepStatus.position ?? 0)} over HTTP. B-tree pages carry no subtree counts, so SQLite cannot count a range faster than walking it. DynamoDB: a \`Select: COUNT\` Query reads every ready-index entry ahead (${fmtRru(rruPer1000)} RRU per 1,000, one extra Query call per MB ≈ ${fmtInt(Math.floor(2 ** 20 / entryBytes))} entries).`,
    );
    lines.push(
      `- **Choice.** Embedded: keep the exact count for status — ${fmtInt(DEEP_TARGET)} deep it is ≈ ${ms((usPer1000 * DEEP_TARGET) / 1000 / 1000)} of index-only reads (measured slope), bounded by the queue's maxQueued, with no extra write on the submit and dispatch paths; an O(1) exact rank would need an order-statistic structure SQLite does not have, or a counter rewritten on every submit, claim and cancel ahead of the request. AWS: the exact count is a metered read that grows with the queue (≈ ${fmtRru(rruAt(DEEP_TARGET))} RRU per status call ${fmtInt(DEEP_TARGET)} deep vs 1 RRU for the GetItem itself), acceptable for occasional status calls on queues of thousands, costly for clients polling deep backlogs.`,
    );
    lines.push(
      `- **Fix (list, both backends):** compute the page's positions with ONE walk of the ready order instead of one count per item: sort the page's QUEUED items by ready key, count once up to the first (or walk the ready index from the head) and continue the walk to the last, assigning each item the running count when its key is reached — exact, and O(deepest position) per page instead of O(limit × depth) (${LIMIT}× fewer entries read for a full page). Cheaper still: leave \`position\` null in list items (SPEC already trims \`input\` from them) and keep it on \`GET /v1/requests/{id}\`.`,
    );
    lines.push(
      `- **Fix (status on DynamoDB, if deep backlogs matter):** cap the exact count (\`Limit\` ≈ 1 MB page, ≈ ${fmtInt(Math.floor(2 ** 20 / entryBytes))} entries, ≤ ${fmtRru(rruAt(Math.floor(2 ** 20 / entryBytes)))} RRU) and past the cap answer from per-queue sequence counters (a \`submitted\` ticket stamped on the request in the submit transaction, a \`started\` counter moved by the claim: position ≈ ticket − started, exact for FIFO within a priority), or cache the last count on the item for a few seconds.`,
    );

    const summary: SummaryRow[] = [
      {
        measure: `SQLite list(limit=100) p50, page without QUEUED items, ${fmtInt(large)} vs ${fmtInt(small)} stored`,
        value: ms((httpOf(el, "listSucceeded") as HttpMeasure).dist.p50),
        floor: ms((httpOf(es, "listSucceeded") as HttpMeasure).dist.p50),
        ratio: listNoQueued("listSucceeded"),
      },
      {
        measure: `SQLite list(limit=100) p50, first page (QUEUED items get positions), ${fmtInt(large)} vs ${fmtInt(small)} stored`,
        value: ms(lFirst.dist.p50),
        floor: ms(sFirst.dist.p50),
        ratio: ratioText(lFirst.dist.p50, sFirst.dist.p50),
      },
      {
        measure: `SQLite status with position p50, #${fmtInt(lDeepStatus.position ?? 0)} vs #${fmtInt(sDeepStatus.position ?? 0)}`,
        value: ms(lDeepStatus.dist.p50),
        floor: ms(sDeepStatus.dist.p50),
        ratio: ratioText(lDeepStatus.dist.p50, sDeepStatus.dist.p50),
      },
      {
        measure: `DynamoDB list(limit=100) RRU, first page, ${fmtInt(awsLarge)} vs ${fmtInt(awsSmall)} stored (store.list)`,
        value: fmtRru(alFirst.usage.rru),
        floor: fmtRru((dynOf(as, "listFirst") as DynamoMeasure).usage.rru),
        ratio: ratioText(alFirst.usage.rru, (dynOf(as, "listFirst") as DynamoMeasure).usage.rru),
      },
      {
        measure: `DynamoDB list endpoint RRU, first page with positions, ${fmtInt(awsLarge)} vs ${fmtInt(awsSmall)} stored (computed)`,
        value: fmtRru(endpointLarge.rru),
        floor: fmtRru(endpointSmall.rru),
        ratio: ratioText(endpointLarge.rru, endpointSmall.rru),
      },
      {
        measure: `DynamoDB RRU of a status position ${fmtInt(DEEP_TARGET)} deep (vs GetItem's 1)`,
        value: fmtRru(rruAt(DEEP_TARGET)),
        floor: "1",
        ratio: ratioText(rruAt(DEEP_TARGET), 1),
      },
    ];

    return {
      markdown: lines.join("\n"),
      json: {
        limit: LIMIT,
        embedded: embedded.map((e) => ({
          ...e,
          http: e.http.map(({ dist, ...rest }) => ({ ...rest, ms: dist })),
        })),
        sqlitePlans: plans,
        sqliteUsPer1000Positions: usPer1000,
        aws: aws.map((a) => ({
          ...a,
          measures: a.measures.map(({ motoMs, ...rest }) => ({ ...rest, motoMs })),
        })),
        dynamoPosition: {
          readyEntryBytes: entryBytes,
          rruPer1000Positions: rruPer1000,
          rruByDepth: Object.fromEntries(
            [10, 1_000, 10_000, 50_000, 1_000_000].map((d) => [d, rruAt(d)]),
          ),
        },
        dynamoListEndpoint: {
          computed: "page read measured + one exact COUNT per QUEUED item by the formula",
          small: endpointSmall,
          large: endpointLarge,
          formulaCheck,
        },
      },
      summary,
    };
  },
};
