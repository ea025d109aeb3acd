/**
 * Bench item 4 (issue 6): what a list page and a queue position cost as the table grows.
 *
 * Positions are exact on both backends (docs/design.md "Reads that do not grow with the
 * table"): the QUEUED requests of each queue are also counted per priority, in the same
 * transactions that move them (SQLite `queued_by_priority`, DynamoDB `queued_p0`…`queued_p9`
 * on the counters item). On SQLite a position is the counts of the higher priorities and of
 * each waiting tenant plus walks of the tenants' index ranges at its own priority, each from
 * the nearer end and stepped in SQLite's C code; a list page's positions share those walks
 * (store.positions); on DynamoDB (issue 15) the rank within a priority
 * comes from submit sequences on the counters item instead, and the fair ties from one
 * pointer each, so nothing there reads the ready index. The data set spreads priorities (half at the default
 * 0, half over 1–9) so that the two costs show apart: a request deep in the queue behind
 * other priorities, and one deep within its own priority.
 *
 * - Embedded: two SQLite stores of the same shape (one queue, three tenants, a backlog of
 *   QUEUED requests behind older finished ones) at a small and a large size, seeded in one
 *   transaction in the store's own schema (the store's recount --fix then sets the counters
 *   and the per-priority counts, checked against the data set), then served by a real server
 *   (TestServer) and read over HTTP: list(limit=100) first page, a page without QUEUED
 *   items, a deep page by cursor, and the status of QUEUED requests near the head, at the
 *   head of the lowest priority (deep, behind every other priority) and at its tail (deep
 *   within its own priority). store.position is also timed in-process at growing depths
 *   within a priority, store.positions over the first page against one position per item,
 *   and the query plans of the list and position statements are reported.
 * - AWS: the same shape on moto through DynamoRequestStore (items and the counters item with
 *   its per-priority split written with BatchWriteItem in the store's item format, checked
 *   against items the store wrote itself). moto's latency does not model DynamoDB (its
 *   index queries walk the whole table), so the figure that counts there is what DynamoDB
 *   would bill: items read and read request units from item sizes (capacity.ts), metered on
 *   the store's own calls (store.list, store.positions of the first page, store.position).
 */
import { rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AttributeValue, DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { BatchWriteCommand, DynamoDBDocumentClient, GetCommand } from "@aws-sdk/lib-dynamodb";
import Database from "better-sqlite3";
import { ulid } from "ulidx";
import { createRng } from "../chaos/prng.ts";
import { createTable } from "../functions/adapters/aws/bootstrap.ts";
import { INDEXES, TABLE_KEY, TTL_ATTRIBUTE } from "../functions/adapters/aws/definitions.ts";
import {
  DynamoRequestStore,
  seqPointerItem,
  tenantAttr,
  toItem,
} from "../functions/adapters/aws/dynamo-request-store.ts";
import { countersKey, requestKey } from "../functions/adapters/aws/items.ts";
import {
  EXPLAINABLE_QUERIES,
  SqliteRequestStore,
  toRow,
} from "../functions/adapters/embedded/sqlite-store.ts";
import { type RequestRecord, RequestStatus, readyOrderKey } from "../functions/core/request.ts";
import { encodeListCursor, pickFairHead } from "../functions/core/store-support.ts";
import { TestServer } from "../test/helpers/server.ts";
import { CapacityCalculator, type DynamoInput, itemSize, readUnits } from "./capacity.ts";
import { PRICES } from "./prices.ts";
import type { BenchContext, BenchSection, SummaryRow } from "./section.ts";
import { type Distribution, distribution, ms, ratioText } from "./stats.ts";

const QUEUE = "q";
/** Queue of the DynamoDB format check's own requests. */
const FORMAT_CHECK_QUEUE = "format-check";
const LIMIT = 100;
const SHALLOW_TARGET = 10;
const RETENTION_DAYS = 30;
/** Priorities a request may have (SPEC: 0–9); the ready order starts with 9. */
const PRIORITIES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] as const;
/** Share of the requests at the default priority 0; the rest spread evenly over 1–9. */
const DEFAULT_PRIORITY_SHARE = 0.5;
/** Tenants and their share of the requests; the lists are read as alice. */
const TENANTS: ReadonlyArray<readonly [string, number]> = [
  ["alice", 0.5],
  ["bob", 0.3],
  ["carol", 0.2],
];
const TOKENS = "t-alice:alice,t-bob:bob,t-carol:carol";

// ---------------------------------------------------------------- the data set

interface Dataset {
  records: RequestRecord[];
  /** QUEUED requests in start order: index = position. */
  startOrder: RequestRecord[];
  statusCounts: Record<string, number>;
  /** QUEUED requests per priority (index = priority), as the per-priority counts hold them. */
  queuedByPriority: number[];
  /** Each QUEUED request's position among the QUEUED requests of its own priority, by id. */
  withinPriority: Map<string, number>;
}

/**
 * `n` requests of one queue, oldest first: the oldest 40 % finished (SUCCEEDED 70 %, FAILED,
 * CANCELLED, EXPIRED 10 % each), the newest 60 % a backlog (95 % QUEUED, the rest cancelled
 * while waiting). Priorities: half at the default 0, the other half spread evenly over 1–9.
 * Tenants alice/bob/carol 50/30/20 %.
 */
function makeDataset(n: number, seed: number, now: number): Dataset {
  const random = createRng(seed).next;
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
    const p = random();
    const priority =
      p < DEFAULT_PRIORITY_SHARE
        ? 0
        : 1 +
          Math.min(
            8,
            Math.floor(((p - DEFAULT_PRIORITY_SHARE) / (1 - DEFAULT_PRIORITY_SHARE)) * 9),
          );
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
      platformRetries: 0,
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
  const startOrder = fairStartOrder(records.filter((r) => r.status === RequestStatus.QUEUED));
  const queuedByPriority = PRIORITIES.map(() => 0);
  const withinPriority = new Map<string, number>();
  for (const r of startOrder) {
    withinPriority.set(r.id, queuedByPriority[r.priority] ?? 0);
    queuedByPriority[r.priority] = (queuedByPriority[r.priority] ?? 0) + 1;
  }
  return { records, startOrder, statusCounts, queuedByPriority, withinPriority };
}

/**
 * The order QUEUED requests start in under SPEC §3 (nothing running, nothing new, started
 * ones keep running): each start goes to the tenant whose head has the highest priority,
 * then the fewest started, then the oldest head (store-support.ts pickFairHead, as the
 * stores' claims). A request's seeded position is its index here.
 */
function fairStartOrder(queued: readonly RequestRecord[]): RequestRecord[] {
  const lanes = new Map<string, RequestRecord[]>();
  for (const r of queued) {
    const lane = lanes.get(r.tenant);
    if (lane) lane.push(r);
    else lanes.set(r.tenant, [r]);
  }
  const state = [...lanes.entries()].map(([tenant, lane]) => ({
    tenant,
    lane: lane.sort((a, b) => (readyOrderKey(a) < readyOrderKey(b) ? -1 : 1)),
    next: 0,
    started: 0,
  }));
  const order: RequestRecord[] = [];
  while (order.length < queued.length) {
    const heads = state.flatMap((t) => {
      const head = t.lane[t.next];
      return head
        ? [{ t, head, priority: head.priority, active: t.started, key: readyOrderKey(head) }]
        : [];
    });
    const pick = pickFairHead(heads);
    if (!pick) break;
    order.push(pick.head);
    pick.t.next++;
    pick.t.started++;
  }
  return order;
}

/** A QUEUED request picked for a position probe. */
interface Probe {
  record: RequestRecord;
  /** Its position: QUEUED requests of the queue that start before it. */
  position: number;
  /** Its position among the QUEUED requests of its own priority (what the count walks). */
  within: number;
}

/**
 * The QUEUED request of `tenant` nearest `target`: by position in the queue, or with
 * `priority`, by position within that priority (a status read by another tenant is a 404,
 * so the probes must be alice's own requests).
 */
export function probeAt(
  ds: Dataset,
  target: number,
  options: { priority?: number; tenant?: string } = {},
): Probe {
  const tenant = options.tenant ?? "alice";
  let best: Probe | null = null;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const [position, record] of ds.startOrder.entries()) {
    if (record.tenant !== tenant) continue;
    if (options.priority !== undefined && record.priority !== options.priority) continue;
    const within = ds.withinPriority.get(record.id) ?? 0;
    const distance = Math.abs((options.priority !== undefined ? within : position) - target);
    if (distance < bestDistance) {
      best = { record, position, within };
      bestDistance = distance;
    }
  }
  if (!best) throw new Error(`no QUEUED request of ${tenant} at priority ${options.priority}`);
  return best;
}

/**
 * The status probes, both backends: near the head (priority 9); the head of priority 0,
 * deep in the queue behind every higher priority but first within its own; the tail of
 * priority 0, the deepest request and the deepest within its priority.
 */
const PROBES: ReadonlyArray<{
  key: string;
  label: string;
  target: number;
  priority?: number;
}> = [
  { key: "Shallow", label: "near the head (priority 9)", target: SHALLOW_TARGET },
  {
    key: "LowHead",
    label: "priority 0, near the head of its priority (deep: behind priorities 1–9)",
    target: SHALLOW_TARGET,
    priority: 0,
  },
  {
    key: "LowTail",
    label: "priority 0, tail of its priority (deep within its own priority)",
    target: Number.MAX_SAFE_INTEGER,
    priority: 0,
  },
];

/** What store.positions must answer for `records`: their seeded positions. */
function expectedPositions(ds: Dataset, records: readonly RequestRecord[]): Map<string, number> {
  const wanted = new Set(records.map((r) => r.id));
  const out = new Map<string, number>();
  ds.startOrder.forEach((r, i) => {
    if (wanted.has(r.id)) out.set(r.id, i);
  });
  return out;
}

/**
 * Index entries one walk of store.positions reads for `records` (positionWalk): per
 * priority, from the head of the priority to its deepest request on the page.
 */
function walkEntries(ds: Dataset, records: readonly RequestRecord[]): number {
  const deepest = new Map<number, number>();
  for (const r of records) {
    const within = ds.withinPriority.get(r.id) ?? 0;
    deepest.set(r.priority, Math.max(deepest.get(r.priority) ?? -1, within));
  }
  return [...deepest.values()].reduce((a, b) => a + b + 1, 0);
}

/** Entries one count per item reads (app.ts before the walk): each item's own-priority depth. */
function perItemEntries(ds: Dataset, records: readonly RequestRecord[]): number {
  return records.reduce((sum, r) => sum + (ds.withinPriority.get(r.id) ?? 0), 0);
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

/**
 * Writes the data set into a fresh store at `dbPath`: the store creates its schema, the rows
 * go in through a second connection in ONE transaction (the store's API commits once per
 * request: ~0.3 ms each, 30 s for 100,000), and the store's own recount --fix sets the
 * counters and rebuilds the per-priority counts (`queued_by_priority`) from the rows.
 */
async function seedSqlite(dbPath: string, ds: Dataset): Promise<number> {
  const t0 = performance.now();
  new SqliteRequestStore(dbPath).close();
  const db = new Database(dbPath);
  try {
    db.pragma("journal_mode = WAL");
    const columns = Object.keys(toRow(ds.records[0] as RequestRecord));
    const insert = db.prepare(
      `INSERT INTO requests (${columns.join(", ")}) VALUES (${columns.map((c) => `@${c}`).join(", ")})`,
    );
    db.transaction(() => {
      for (const r of ds.records) insert.run(toRow(r));
    })();
  } finally {
    db.close();
  }
  const store = new SqliteRequestStore(dbPath);
  try {
    await store.recount({ fix: true });
  } finally {
    store.close();
  }
  return performance.now() - t0;
}

/**
 * A sample read back through the store must equal what was written; the counters and the
 * per-priority counts must hold the data set's QUEUED requests (positions read them).
 */
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
  const db = new Database(dbPath, { readonly: true });
  try {
    const rows = db
      .prepare("SELECT priority, queued FROM queued_by_priority WHERE queue = ?")
      .all(QUEUE) as { priority: number; queued: number }[];
    const stored = PRIORITIES.map((p) => rows.find((r) => r.priority === p)?.queued ?? 0);
    if (stored.join(",") !== ds.queuedByPriority.join(",")) {
      throw new Error(
        `queued_by_priority holds ${stored.join(",")}, seeded ${ds.queuedByPriority.join(",")}`,
      );
    }
  } finally {
    db.close();
  }
}

interface PositionTiming {
  priority: number;
  /** Position within its priority: what the range count walks. */
  within: number;
  position: number;
  p50Us: number;
  p99Us: number;
}

/**
 * store.position in-process (no HTTP) at growing depths within priority 0, behind every
 * request of priorities 1–9, and of the head of the queue: the cost curve of the count.
 */
async function positionCurve(dbPath: string, ds: Dataset): Promise<PositionTiming[]> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const lowest = ds.startOrder.filter((r) => r.priority === 0);
    const depths = [0, 10, 100, 1_000, 10_000, 100_000].filter((d) => d < lowest.length);
    depths.push(lowest.length - 1);
    const picks = [
      ds.startOrder[0] as RequestRecord,
      ...[...new Set(depths)].map((d) => lowest[d] as RequestRecord),
    ];
    const positionOf = expectedPositions(ds, picks);
    const out: PositionTiming[] = [];
    for (const r of picks) {
      const position = positionOf.get(r.id) ?? -1;
      const got = await store.position(r);
      if (got !== position) throw new Error(`position of the request at #${position} read ${got}`);
      const { dist } = await sample(
        async () => {
          await store.position(r);
        },
        { max: 30, min: 5, budgetMs: 1500, warm: 2 },
      );
      out.push({
        priority: r.priority,
        within: ds.withinPriority.get(r.id) ?? 0,
        position,
        p50Us: dist.p50 * 1000,
        p99Us: dist.p99 * 1000,
      });
    }
    return out;
  } finally {
    store.close();
  }
}

/** The first page's positions in-process: store.positions (one walk) vs one position each. */
interface PagePositions {
  queuedItems: number;
  /** Index entries of the walk (per priority, up to the page's deepest) and of per-item counts. */
  walkEntries: number;
  perItemEntries: number;
  /** p50 ms. */
  walkMs: number;
  perItemMs: number;
}

async function pagePositionsInProcess(dbPath: string, ds: Dataset): Promise<PagePositions> {
  const store = new SqliteRequestStore(dbPath);
  try {
    const page = await store.list({ tenant: "alice", queue: QUEUE, limit: LIMIT });
    const queued = page.items.filter((r) => r.status === RequestStatus.QUEUED);
    const want = expectedPositions(ds, queued);
    const got = await store.positions(queued);
    for (const [id, position] of want) {
      if (got.get(id) !== position) {
        throw new Error(`store.positions put ${id} at ${got.get(id)}, seeded at ${position}`);
      }
    }
    const opts = { max: 50, min: 5, budgetMs: 1500, warm: 3 };
    const walk = await sample(async () => {
      await store.positions(queued);
    }, opts);
    const perItem = await sample(async () => {
      await Promise.all(queued.map((r) => store.position(r)));
    }, opts);
    return {
      queuedItems: queued.length,
      walkEntries: walkEntries(ds, queued),
      perItemEntries: perItemEntries(ds, queued),
      walkMs: walk.dist.p50,
      perItemMs: perItem.dist.p50,
    };
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
  /** Position the status answer carried, and the probe's position within its priority. */
  position?: number;
  within?: number;
}

interface EmbeddedSize {
  n: number;
  statusCounts: Record<string, number>;
  queued: number;
  /** QUEUED per priority (index = priority). */
  queuedByPriority: number[];
  seedMs: number;
  positionCurve: PositionTiming[];
  pagePositions: PagePositions;
  /** store.list p50 in-process (ms), by measure key. */
  listInProcess: Record<string, number>;
  btreeLevels: Record<string, number> | null;
  http: HttpMeasure[];
}

async function measureEmbeddedSize(ctx: BenchContext, n: number): Promise<EmbeddedSize> {
  const dir = await mkdtemp(join(tmpdir(), "longrun-bench-queries-"));
  const dbPath = join(dir, "longrun.db");
  const ds = makeDataset(n, 4 + n, Date.now());
  const seedMs = await seedSqlite(dbPath, ds);
  await checkSqliteSeed(dbPath, ds);
  ctx.log(`queries: seeded ${n} requests into SQLite in ${ms(seedMs)}`);
  const curve = await positionCurve(dbPath, ds);
  const pagePositions = await pagePositionsInProcess(dbPath, ds);
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
    for (const p of PROBES) {
      const { record, position, within } = probeAt(ds, p.target, { priority: p.priority });
      const path = `/v1/requests/${record.id}`;
      const answer = await get(path);
      const body = JSON.parse(answer.body) as { status: string; position: number };
      if (answer.status !== 200 || body.status !== RequestStatus.QUEUED) {
        throw new Error(`${path}: ${answer.status} ${answer.body}`);
      }
      // The server starts the head of the queue (priority 9, ahead of every probe): the
      // seeded position may be one less, and so the position within the head's priority.
      const shift = position - body.position;
      if (shift !== 0 && shift !== 1) {
        throw new Error(`${path}: position ${body.position}, seeded at ${position}`);
      }
      const head = ds.startOrder[0] as RequestRecord;
      const { dist } = await sample(
        async () => {
          await get(path);
        },
        { max: 50, min: 5, budgetMs: budget, warm: 10 },
      );
      http.push({
        key: `status${p.key}`,
        label: `status, ${p.label}`,
        dist,
        position: body.position,
        within: record.priority === head.priority ? within - shift : within,
      });
    }
  } finally {
    await server.stop().catch(() => {});
    await server.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    n,
    statusCounts: ds.statusCounts,
    queued: ds.startOrder.length,
    queuedByPriority: ds.queuedByPriority,
    seedMs,
    positionCurve: curve,
    pagePositions,
    listInProcess: inProcess,
    btreeLevels: levels,
    http,
  };
}

// ---------------------------------------------------------------- AWS (DynamoDB on moto)

const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "bench", secretAccessKey: "bench" };

/**
 * The item DynamoRequestStore holds for `r` after the writes that brought it to its status:
 * the store's own toItem (a submit's item), then what a status change does to the keys
 * (statusPk follows the status; the ready and sweep keys go and the TTL comes once it ends;
 * an active request sits in the ACTIVE sweep partition). `rev` counts writes and is left out
 * of the format check.
 */
function dynamoItem(r: RequestRecord, seq: number): Record<string, unknown> {
  const item: Record<string, unknown> = { ...toItem(r, null), seq };
  if (r.status === RequestStatus.QUEUED) return item;
  delete item[INDEXES.ready.partitionKey];
  delete item[INDEXES.ready.sortKey];
  if (r.status === RequestStatus.STARTING || r.status === RequestStatus.RUNNING) {
    item[INDEXES.sweep.partitionKey] = `ACTIVE#${r.queue}`;
    item[INDEXES.sweep.sortKey] = `${String(r.createdAt).padStart(15, "0")}#${r.id}`;
  } else {
    delete item[INDEXES.sweep.partitionKey];
    delete item[INDEXES.sweep.sortKey];
    const finishedAt = r.finishedAt ?? r.updatedAt;
    item[TTL_ATTRIBUTE] = Math.floor(finishedAt / 1000) + RETENTION_DAYS * 86_400;
  }
  return item;
}

/**
 * Each request's place in its tenant's submit sequence at its priority (the order the
 * submits made them, createdAt here), as the submits would have stamped them.
 */
function sequencePlaces(records: readonly RequestRecord[]): Map<string, number> {
  const next = new Map<string, number>();
  const out = new Map<string, number>();
  for (const r of [...records].sort((a, b) => a.createdAt - b.createdAt)) {
    const key = `${r.tenant}\u0000${r.priority}`;
    const seq = next.get(key) ?? 0;
    out.set(r.id, seq);
    next.set(key, seq + 1);
  }
  return out;
}

/**
 * The queue's counters item as the store's transactions leave it for `records` (no request
 * active): `queued` and `running`, `queued` split by priority (`queued_p<n>`), and per
 * tenant its QUEUED (`tq#`, `tq<p>#`), active (`tr#`) and its submit sequences (`ti<p>#`
 * places given, `tk<p>#` the newest createdAt, `tc<p>#` places that left QUEUED out of
 * order above the sequence's head: the requests cancelled while waiting).
 */
function dynamoCounters(
  queue: string,
  records: readonly RequestRecord[],
  places: ReadonlyMap<string, number>,
): Record<string, unknown> {
  const queued = records.filter((r) => r.status === RequestStatus.QUEUED);
  const item: Record<string, unknown> = {
    ...countersKey(queue),
    queued: queued.length,
    running: 0,
  };
  for (const p of PRIORITIES) item[`queued_p${p}`] = queued.filter((r) => r.priority === p).length;
  const add = (name: string, by: number) => {
    item[name] = ((item[name] as number | undefined) ?? 0) + by;
  };
  const heads = new Map<string, number>();
  for (const r of records) {
    add(tenantAttr("q", r.tenant), r.status === RequestStatus.QUEUED ? 1 : 0);
    add(tenantAttr(`q${r.priority}`, r.tenant), r.status === RequestStatus.QUEUED ? 1 : 0);
    // Created by the first claim of one of the tenant's requests.
    if (r.startedAt !== null) add(tenantAttr("r", r.tenant), 0);
    add(tenantAttr(`i${r.priority}`, r.tenant), 1);
    const last = tenantAttr(`k${r.priority}`, r.tenant);
    item[last] = Math.max((item[last] as number | undefined) ?? 0, r.createdAt);
    if (r.status === RequestStatus.QUEUED) {
      const head = tenantAttr(`c${r.priority}`, r.tenant);
      heads.set(head, Math.min(heads.get(head) ?? Number.POSITIVE_INFINITY, places.get(r.id) ?? 0));
    }
  }
  for (const r of records) {
    const name = tenantAttr(`c${r.priority}`, r.tenant);
    const seq = places.get(r.id) ?? 0;
    if (r.status === RequestStatus.QUEUED || seq < (heads.get(name) ?? Number.POSITIVE_INFINITY)) {
      continue;
    }
    const set = (item[name] as Set<number> | undefined) ?? new Set<number>();
    set.add(seq);
    item[name] = set;
  }
  return item;
}

/**
 * The attributes of a counters item the seeding writes, for comparison (the store also
 * keeps run-time sums and, for places below a sequence's head, gaps it drops later).
 */
function countersView(item: Record<string, unknown> | undefined): string {
  if (!item) return "null";
  const view: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(item)) {
    if (/^(queued|running)$|^queued_p|^t(q[0-9]?|r|i[0-9]|k[0-9])#/.test(name)) view[name] = value;
  }
  for (const p of PRIORITIES) view[`queued_p${p}`] = item[`queued_p${p}`] ?? 0;
  return withoutRev(view);
}

function withoutRev(item: Record<string, unknown> | undefined): string {
  if (!item) return "null";
  const { rev: _rev, ...rest } = item;
  return JSON.stringify(
    Object.fromEntries(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1))),
  );
}

/**
 * Drives four requests of different priorities through the store's own writes (QUEUED;
 * QUEUED → CANCELLED; QUEUED → EXPIRED; QUEUED → STARTING → RUNNING → SUCCEEDED) and checks
 * that {@link dynamoItem} builds exactly the items the store wrote, and
 * {@link dynamoCounters} the queue's counters item with its per-priority split: the seeded
 * table then has the store's format, not an imitation of it.
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
  const ended: RequestRecord[] = [];
  for (const [i, target] of plans.entries()) {
    const base = {
      ...(ds.records[i] as RequestRecord),
      id: `req_${ulid()}`,
      queue: FORMAT_CHECK_QUEUE,
      // Four priorities, so that the counters item's split is written and moved back.
      priority: (i * 3 + 2) % 10,
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
        Key: requestKey(base.id),
        ConsistentRead: true,
      }),
    );
    // Each request here is the first of its tenant's sequence at its priority.
    const mine = withoutRev(dynamoItem(record, 0));
    const theirs = withoutRev(raw.Item);
    if (mine !== theirs) {
      throw new Error(
        `the seeded item format differs from the store's for a ${target} request:\n store: ${theirs}\n bench: ${mine}`,
      );
    }
    ended.push(record);
  }
  const counters = await doc.send(
    new GetCommand({
      TableName: table,
      Key: countersKey(FORMAT_CHECK_QUEUE),
      ConsistentRead: true,
    }),
  );
  const mine = countersView(
    dynamoCounters(FORMAT_CHECK_QUEUE, ended, new Map(ended.map((r) => [r.id, 0]))),
  );
  const theirs = countersView(counters.Item);
  if (mine !== theirs) {
    throw new Error(
      `the seeded counters item differs from the store's:\n store: ${theirs}\n bench: ${mine}`,
    );
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
  /** Position probes: the request's position, and its position within its priority. */
  position?: number;
  within?: number;
  /** store.positions: index entries its walk reads, and what one count per item would. */
  walkEntries?: number;
  perItemEntries?: number;
  /** store.positions: Σ of the items' positions (what one COUNT of the whole queue ahead each read). */
  sumOfPositions?: number;
}

interface DynamoSize {
  n: number;
  queued: number;
  /** QUEUED per priority (index = priority), as seeded on the counters item. */
  queuedByPriority: number[];
  seedMs: number;
  seedCalls: number;
  measures: DynamoMeasure[];
  /** Read-index entry size in bytes (KEYS_ONLY: table keys + index keys). */
  readyEntryBytes: number;
  /** Size of the queue's counters item (read once, consistently, per position). */
  countersBytes: number;
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
  const places = sequencePlaces(ds.records);
  const items = ds.records.map((r) => dynamoItem(r, places.get(r.id) ?? 0));
  // The pointers of the places still waiting (the ones a position reads; the store writes
  // one per submit, which expire after their requests could wait).
  for (const r of ds.startOrder) items.push(seqPointerItem(r, places.get(r.id) ?? 0));
  // The queue's counters with their per-priority split, as the submits would have left them.
  items.push(dynamoCounters(QUEUE, ds.records, places));
  const seedCalls = await batchWrite(doc, table, items);
  const seedMs = performance.now() - t0;
  ctx.log(`queries: seeded ${n} requests into DynamoDB (moto) in ${ms(seedMs)}`);

  const sizeOf = async (key: Record<string, string>, attributes?: string[]) => {
    const got = await plumbing.send(
      new GetItemCommand({
        TableName: table,
        Key: Object.fromEntries(Object.entries(key).map(([k, v]) => [k, { S: v }])),
        ConsistentRead: true,
      }),
    );
    const item: Record<string, AttributeValue> = {};
    for (const [k, v] of Object.entries(got.Item ?? {})) {
      if (!attributes || attributes.includes(k)) item[k] = v;
    }
    return itemSize(item);
  };
  const readyEntryBytes = await sizeOf(requestKey((ds.startOrder[0] as RequestRecord).id), [
    TABLE_KEY.partitionKey,
    TABLE_KEY.sortKey,
    INDEXES.ready.partitionKey,
    INDEXES.ready.sortKey,
  ]);
  const countersBytes = await sizeOf(countersKey(QUEUE));

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
  // What the list endpoint adds to the first page (functions/http/app.ts): the positions of
  // its QUEUED items, counted together.
  const pageQueued = firstPage.items.filter((r) => r.status === RequestStatus.QUEUED);
  const wantPositions = expectedPositions(ds, pageQueued);
  const gotPositions = await run(
    "positionsFirstPage",
    "store.positions of the first page's QUEUED items",
    (s) => s.positions(pageQueued),
    repeats,
    () => ({
      queuedItems: pageQueued.length,
      walkEntries: walkEntries(ds, pageQueued),
      perItemEntries: perItemEntries(ds, pageQueued),
      sumOfPositions: [...wantPositions.values()].reduce((a, b) => a + b, 0),
    }),
  );
  for (const [id, position] of wantPositions) {
    if (gotPositions.get(id) !== position) {
      throw new Error(
        `dynamo positions put ${id} at ${gotPositions.get(id)}, seeded at ${position}`,
      );
    }
  }
  for (const p of PROBES) {
    const { record, position, within } = probeAt(ds, p.target, { priority: p.priority });
    // A status reads the request (GetItem, which tells the store its sequence place), then
    // its position: the read happens here, unmetered, so that the row is the position's.
    await plainStore.get(record.id);
    await meteredStore.get(record.id);
    const got = await run(
      `position${p.key}`,
      `position, ${p.label}`,
      (s) => s.position(record),
      repeats,
      () => ({ position, within }),
    );
    if (got !== position) throw new Error(`dynamo position of #${position} read ${got}`);
    // The counters item, then at most one sequence pointer per other waiting tenant. More
    // means the store did not find usable sequence figures and read the ready index.
    const read = (measures.at(-1) as DynamoMeasure).usage.itemsRead;
    if (read > TENANTS.length) {
      throw new Error(
        `position of #${position} (#${within} within priority ${record.priority}) read ${read} items, expected at most ${TENANTS.length}: are the seeded sequence figures used?`,
      );
    }
  }
  const depthOf = new Map(ds.startOrder.map((r, i) => [r.id, i]));
  return {
    n,
    queued: ds.startOrder.length,
    queuedByPriority: ds.queuedByPriority,
    seedMs,
    seedCalls,
    measures,
    readyEntryBytes,
    countersBytes,
    firstPageQueuedDepths: firstPage.items.flatMap((r) => {
      const d = depthOf.get(r.id);
      return d === undefined ? [] : [d];
    }),
  };
}

/**
 * Read units of a Query over `entries` ready-index entries of `entryBytes` each: one Query
 * page per MB read, each rounded up to 4 KB and halved (GSI reads are eventually consistent).
 */
function positionRru(entries: number, entryBytes: number): number {
  const pageBytes = 1024 * 1024;
  let bytes = entries * entryBytes;
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

    // Position cost on DynamoDB: the counters item (one consistent GetItem) + the request's
    // own priority up to and including it on the ready index (measured items agree).
    const entryBytes = al.readyEntryBytes;
    const countersRru = readUnits(al.countersBytes, true);
    const rruPer1000 = positionRru(1000, entryBytes);
    const statusRru = (within: number) => countersRru + positionRru(within + 1, entryBytes);
    // Now (issue 15): the counters item and at most one pointer per other waiting tenant.
    const statusNow = countersRru + 0.5 * (TENANTS.length - 1);
    const queryCalls = (entries: number) =>
      Math.max(1, Math.ceil((entries * entryBytes) / 2 ** 20));
    const callsOf = (u: Usage) => Object.values(u.calls).reduce((a, b) => a + b, 0);
    // The list endpoint's first page on AWS, measured: store.list + store.positions.
    const listEndpoint = (d: DynamoSize) => {
      const page = dynOf(d, "listFirst") as DynamoMeasure;
      const positions = dynOf(d, "positionsFirstPage") as DynamoMeasure;
      return {
        queuedItems: positions.queuedItems ?? 0,
        calls: callsOf(page.usage) + callsOf(positions.usage),
        entriesRead: page.usage.itemsRead + positions.usage.itemsRead,
        rru: page.usage.rru + positions.usage.rru,
        walkEntries: positions.walkEntries ?? 0,
      };
    };
    // The same page under the design before c56269f, computed: one `Select: COUNT` Query
    // per QUEUED item over every ready-index entry ahead of it.
    const listEndpointBefore = (d: DynamoSize) => {
      const page = dynOf(d, "listFirst") as DynamoMeasure;
      const depths = d.firstPageQueuedDepths;
      return {
        calls: callsOf(page.usage) + depths.reduce((sum, x) => sum + queryCalls(x), 0),
        entriesRead: page.usage.itemsRead + depths.reduce((sum, x) => sum + x, 0),
        rru: page.usage.rru + depths.reduce((sum, x) => sum + positionRru(x, entryBytes), 0),
      };
    };
    const endpointSmall = listEndpoint(as);
    const endpointLarge = listEndpoint(al);
    const beforeSmall = listEndpointBefore(as);
    const beforeLarge = listEndpointBefore(al);
    const alFirst = dynOf(al, "listFirst") as DynamoMeasure;
    // The formula against what the metered probes read.
    const formulaCheck = aws.flatMap((d) =>
      PROBES.map((p) => {
        const m = dynOf(d, `position${p.key}`) as DynamoMeasure;
        return {
          n: d.n,
          probe: p.key,
          position: m.position ?? 0,
          within: m.within ?? 0,
          measuredRru: m.usage.rru,
          formulaRru: statusRru(m.within ?? 0),
          itemsRead: m.usage.itemsRead,
        };
      }),
    );

    const split = (counts: readonly number[]) =>
      [...counts]
        .map((c, p) => `p${p} ${fmtInt(c)}`)
        .reverse()
        .join(", ");
    const lines: string[] = [];
    lines.push(`## List and position cost at table size (issue 6 item 4)`);
    lines.push("");
    lines.push(
      `One queue, tenants alice/bob/carol (50/30/20 %), oldest 40 % finished, newest 60 % a backlog (95 % QUEUED, the rest cancelled while waiting). Priorities: half at the default 0, the other half spread evenly over 1–9; the ready order starts with 9, so the priority-0 requests wait behind all the others. QUEUED at ${fmtInt(large)} stored, by priority: ${split(el.queuedByPriority)}. Lists are alice's, limit=${LIMIT}. Seeded in the stores' own formats (SQLite: one transaction, then the store's recount --fix, which sets \`queue_counters\` and rebuilds \`queued_by_priority\`, both checked against the data set, rows read back through the store; DynamoDB: BatchWriteItem of request items and of the counters item with its \`queued_p0\`…\`queued_p9\` split, checked equal to what the store itself writes for requests of several priorities).`,
    );
    lines.push("");
    lines.push(`### Embedded: SQLite over HTTP (real server), p50 / p99`);
    lines.push("");
    lines.push(
      `| measure | ${fmtInt(small)} stored | ${fmtInt(large)} stored | ratio (p50) | QUEUED items in page, or position (within its priority) |`,
    );
    lines.push("|---|---:|---:|---:|---:|");
    const at = (m: HttpMeasure) => `#${fmtInt(m.position ?? 0)} (#${fmtInt(m.within ?? 0)})`;
    for (const m of el.http) {
      const s = httpOf(es, m.key);
      if (!s) continue;
      const extra =
        m.queuedItems !== undefined ? `${s.queuedItems} / ${m.queuedItems}` : `${at(s)} / ${at(m)}`;
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
    lines.push(
      "The first page's positions in-process: `store.positions` (what the list endpoint calls: per priority the counts once, and each tenant's index range walked once from its nearer end) against one `store.position` per QUEUED item, p50. The entries columns are what walks from the heads would read for this page (one per priority up to the page's deepest item, and one count per item: the store's two earlier designs); the walks from the nearer end read far fewer on a newest-first page:",
    );
    lines.push("");
    lines.push(
      "| stored | QUEUED items on the page | store.positions | entries from the heads, one walk per priority | one store.position per item | entries from the heads, one count per item |",
    );
    lines.push("|---:|---:|---:|---:|---:|---:|");
    for (const e of embedded) {
      const pp = e.pagePositions;
      lines.push(
        `| ${fmtInt(e.n)} | ${pp.queuedItems} | ${ms(pp.walkMs)} | ${fmtInt(pp.walkEntries)} | ${ms(pp.perItemMs)} | ${fmtInt(pp.perItemEntries)} |`,
      );
    }
    lines.push("");
    lines.push(`Position in-process (\`store.position\`, ${fmtInt(large)} stored):`);
    lines.push("");
    lines.push("| priority | position within its priority | position | p50 | p99 |");
    lines.push("|---:|---:|---:|---:|---:|");
    for (const p of el.positionCurve) {
      lines.push(
        `| ${p.priority} | ${fmtInt(p.within)} | ${fmtInt(p.position)} | ${(p.p50Us / 1000).toFixed(3)} ms | ${(p.p99Us / 1000).toFixed(3)} ms |`,
      );
    }
    const lowest = el.positionCurve.filter((p) => p.priority === 0);
    const deepest = lowest.at(-1) as PositionTiming;
    const lowHead = lowest[0] as PositionTiming;
    const queueHead = el.positionCurve[0] as PositionTiming;
    // The walks start at the nearer end of each tenant's range, so the costliest request is
    // one in the middle of its priority, not the deepest.
    const peak = lowest.reduce((a, b) => (b.p50Us > a.p50Us ? b : a), lowHead);
    const peakText = `${(peak.p50Us / 1000).toFixed(3)} ms at #${fmtInt(peak.within)} within priority 0, against ${(deepest.p50Us / 1000).toFixed(3)} ms at its tail (#${fmtInt(deepest.within)})`;
    lines.push("");
    lines.push(
      `The cost follows a request's distance from the nearer end of each waiting tenant's range at its priority, not its depth: ${peakText}; each walk steps the covering index \`requests_tenant_ready\` entry by entry (counts and OFFSET skips), in SQLite's C code. The head of priority 0 at position ${fmtInt(lowHead.position)} costs ${(lowHead.p50Us / 1000).toFixed(3)} ms, as the head of the queue (${(queueHead.p50Us / 1000).toFixed(3)} ms): the ${fmtInt(lowHead.position)} requests of priorities 1–9 ahead of it are summed from \`queued_by_priority\`.`,
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
      `Items read and read request units (RRU) are what DynamoDB bills and what its latency follows; RRU computed from item sizes (capacity.ts), eventually consistent on the indexes, strongly consistent for the counters item. Every row is one metered call of the store's own code (the list endpoint = its \`store.list\` + \`store.positions\` rows). moto's latency is shown but does not model DynamoDB: its index queries walk the whole table in Python. QUEUED at ${fmtInt(awsLarge)} stored, by priority: ${split(al.queuedByPriority)}.`,
    );
    lines.push("");
    lines.push(
      `| measure | calls ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | items read ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | RRU ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} | RRU ratio | moto latency ${fmtInt(awsSmall)} / ${fmtInt(awsLarge)} |`,
    );
    lines.push("|---|---:|---:|---:|---:|---:|");
    for (const m of al.measures) {
      const s = dynOf(as, m.key);
      if (!s) continue;
      const label =
        m.position !== undefined
          ? `${m.label} (#${fmtInt(s.position ?? 0)} (#${fmtInt(s.within ?? 0)}) / #${fmtInt(m.position)} (#${fmtInt(m.within ?? 0)}))`
          : m.queuedItems !== undefined && m.key === "positionsFirstPage"
            ? `${m.label} (${s.queuedItems} / ${m.queuedItems})`
            : m.label;
      lines.push(
        `| ${label} | ${callsOf(s.usage)} / ${callsOf(m.usage)} | ${fmtInt(s.usage.itemsRead)} / ${fmtInt(m.usage.itemsRead)} | ${fmtRru(s.usage.rru)} / ${fmtRru(m.usage.rru)} | ${ratioText(m.usage.rru, s.usage.rru)} | ${s.motoMs ? ms(s.motoMs.p50) : "–"} / ${m.motoMs ? ms(m.motoMs.p50) : "–"} |`,
      );
      if (m.key === "positionsFirstPage") {
        lines.push(
          `| **list endpoint, first page** (store.list + store.positions) | ${endpointSmall.calls} / ${endpointLarge.calls} | ${fmtInt(endpointSmall.entriesRead)} / ${fmtInt(endpointLarge.entriesRead)} | ${fmtRru(endpointSmall.rru)} / ${fmtRru(endpointLarge.rru)} | ${ratioText(endpointLarge.rru, endpointSmall.rru)} | – |`,
        );
      }
    }
    lines.push("");
    lines.push(
      `Positions are (#position (#within its priority)). \`store.positions\` reads the counters item once and the pointers its fair ties need in one BatchGetItem: each item's rank within its tenant and priority comes from its submit sequence place and the counters (docs/design.md "Positions in O(1) on DynamoDB"), so no ready-index entry is read. The walk it replaced (one Query per QUEUED item, each continuing from the item before it) read ${fmtInt(endpointSmall.walkEntries)} / ${fmtInt(endpointLarge.walkEntries)} entries for this page; one count per item of its own priority would read ${fmtInt((dynOf(as, "positionsFirstPage") as DynamoMeasure).perItemEntries ?? 0)} / ${fmtInt((dynOf(al, "positionsFirstPage") as DynamoMeasure).perItemEntries ?? 0)}. The same page before c56269f (one \`Select: COUNT\` Query per QUEUED item over the whole queue ahead, computed from its depths): ${beforeSmall.calls} / ${beforeLarge.calls} calls, ${fmtInt(beforeSmall.entriesRead)} / ${fmtInt(beforeLarge.entriesRead)} entries, ${fmtRru(beforeSmall.rru)} / ${fmtRru(beforeLarge.rru)} RRU.`,
    );
    lines.push("");
    lines.push(
      `Seeding on moto: ${fmtInt(awsSmall)} items in ${ms(as.seedMs)}, ${fmtInt(awsLarge)} in ${ms(al.seedMs)} (${al.seedCalls} BatchWriteItem calls).`,
    );
    lines.push("");
    const unitUsd = PRICES.dynamoReadRequestUnit.usd / PRICES.dynamoReadRequestUnit.per;
    lines.push(
      `Status position on DynamoDB = one consistent GetItem of the counters item (${al.countersBytes} B: ${fmtRru(countersRru)} RRU; the higher priorities' counts, every waiting tenant's level and its submit sequence figures) + at most one sequence pointer per other waiting tenant (one BatchGetItem, 0.5 RRU each): at most ${fmtRru(statusNow)} RRU here (${TENANTS.length} tenants), whatever the depth. The metered probes: ${formulaCheck.map((f) => `${fmtInt(f.n)} #${fmtInt(f.position)} (#${fmtInt(f.within)}): ${fmtInt(f.itemsRead)} items, ${fmtRru(f.measuredRru)} RRU`).join("; ")}. Before issue 15 a position also read its own priority's range of the ready index up to the request (${entryBytes} B per entry, KEYS_ONLY, ≈ ${fmtRru(rruPer1000)} RRU per 1,000):`,
    );
    lines.push("");
    lines.push(
      "| position within its priority | RRU per status position, index walk (before) | Query calls (before) | RRU now | USD per million status positions, before / now |",
    );
    lines.push("|---:|---:|---:|---:|---:|");
    for (const d of [10, 1_000, 10_000, 50_000, 1_000_000]) {
      const rru = statusRru(d);
      lines.push(
        `| ${fmtInt(d)} | ${fmtRru(rru)} | ${queryCalls(d + 1)} | ≤ ${fmtRru(statusNow)} | ${(rru * unitUsd * 1e6).toFixed(2)} / ${(statusNow * unitUsd * 1e6).toFixed(2)} |`,
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
    const hShallow = httpOf(el, "statusShallow") as HttpMeasure;
    const hLowHead = httpOf(el, "statusLowHead") as HttpMeasure;
    const hLowTail = httpOf(el, "statusLowTail") as HttpMeasure;
    const dShallow = dynOf(al, "positionShallow") as DynamoMeasure;
    const dLowHead = dynOf(al, "positionLowHead") as DynamoMeasure;
    const dLowTail = dynOf(al, "positionLowTail") as DynamoMeasure;
    const lPage = el.pagePositions;
    lines.push("### What the code does, and the design on each backend");
    lines.push("");
    lines.push(
      `- **The list query itself is O(limit) on both backends.** SQLite: \`listAll\`/\`listStatus\` and their cursor forms are index range searches on \`requests_list\` / \`requests_list_status\` (tenant, queue[, status], created_at DESC, id DESC) with no sort step; a status filter runs one range per status and merges. DynamoDB: one Query of the \`list\` or \`listByStatus\` GSI with \`Limit = limit + 1\`. Pages without QUEUED items read ${LIMIT + 1} rows whatever the table holds: over HTTP their p50 ratios are ${listNoQueued("listSucceeded")} and ${listNoQueued("listDeep")}, in-process ${inProc("listSucceeded")} and ${inProc("listDeep")}; what growth there is comes per row, not per table: the list index is not covering, so each of the ${LIMIT + 1} rows is a rowid lookup into the table, and the B-trees are deeper at ${fmtInt(large)} rows (${levelsText}) — O(limit × log n). On DynamoDB the page reads at most ${LIMIT + 1} items: ${fmtRru((dynOf(as, "listFirst") as DynamoMeasure).usage.rru)} vs ${fmtRru(alFirst.usage.rru)} RRU at ${fmtInt(awsSmall)} vs ${fmtInt(awsLarge)} stored.`,
    );
    lines.push(
      `- **The list endpoint counts a page's positions together** (functions/http/app.ts \`listRequests\` → \`store.positions\`; on SQLite \`#fairPositions\`): the page's QUEUED items are grouped by priority (\`positionWalk\` in store-support.ts); per priority the higher priorities and every waiting tenant's level and count come from the counts once, the page's own tenant's ranks from one anchor (entries before its first item or from its last, whichever end is nearer) and a count of each gap between neighbours, and each other tenant's fair-tie requests from one walk of its range from the nearer end, skipping by OFFSET. The cost is about that of the item on the page farthest from both ends, not the sum over items, and a newest-first page sits at the tails: first page over HTTP ${ms(sFirst.dist.p50)} at ${fmtInt(small)} vs ${ms(lFirst.dist.p50)} at ${fmtInt(large)} stored (ratio ${ratioText(lFirst.dist.p50, sFirst.dist.p50)}); in-process at ${fmtInt(large)} \`store.positions\` takes ${ms(lPage.walkMs)} where one position per item takes ${ms(lPage.perItemMs)} (walks from the heads would read ${fmtInt(lPage.walkEntries)} and ${fmtInt(lPage.perItemEntries)} entries). On DynamoDB a page's positions read no index at all since issue 15 (one counters read and one BatchGetItem of fair-tie pointers): ${fmtRru(endpointSmall.rru)} vs ${fmtRru(endpointLarge.rru)} RRU per page (list + positions) at ${fmtInt(awsSmall)} vs ${fmtInt(awsLarge)} stored (${fmtRru(beforeSmall.rru)} vs ${fmtRru(beforeLarge.rru)} before c56269f, computed).`,
    );
    lines.push(
      `- **A status position is exact: the higher priorities' counts plus walks within its own priority — O(distance from the nearer end of each tenant's range).** SQLite: \`position\` sums at most ten \`queued_by_priority\` rows, reads each waiting tenant's level and count from \`tenant_counters\` / \`tenant_queued_by_priority\`, and walks the covering partial index \`requests_tenant_ready\` of its own tenant (its rank) and of each other tenant (one fair-tie request each) from whichever end is nearer (in-process ${peakText}; B-tree pages carry no subtree counts, so a range is counted by walking it). Over HTTP at ${fmtInt(large)} stored: near the head ${ms(hShallow.dist.p50)}, the head of priority 0 at #${fmtInt(hLowHead.position ?? 0)} ${ms(hLowHead.dist.p50)}, the tail of priority 0 at #${fmtInt(hLowTail.position ?? 0)} (#${fmtInt(hLowTail.within ?? 0)} within) ${ms(hLowTail.dist.p50)}. DynamoDB (issue 15): one consistent GetItem of the counters item, whose figures give the higher priorities, every tenant's level and the request's rank within its tenant and priority (its submit sequence place minus the places that left below it), plus at most one pointer per other waiting tenant: ${fmtRru(dShallow.usage.rru)}, ${fmtRru(dLowHead.usage.rru)} and ${fmtRru(dLowTail.usage.rru)} RRU for the same three at ${fmtInt(awsLarge)} stored (#${fmtInt(dShallow.position ?? 0)}, #${fmtInt(dLowHead.position ?? 0)}, #${fmtInt(dLowTail.position ?? 0)}), O(1) in the depth.`,
    );
    lines.push(
      "- **A submit's 202 position comes from the counts, O(1) in the queue's depth** (submit section). SQLite: inside the submit transaction — a new request sorts last in its priority, so its rank within its tenant is counted from the tail of the tenant's range (a few entries; a clock that stepped back counts the few behind it), so it is exact. DynamoDB: one consistent GetItem of the counters item after the TransactWriteItems, replacing a COUNT Query over the ready index; a request another host commits in between is counted too (a bounded overcount under concurrency).",
    );
    lines.push(
      "- **Why this design.** Positions stay exact on both backends (callers read them as a promise; on DynamoDB the own-priority count reads a GSI, eventually consistent, as the COUNT it replaced did). Neither backend counts a range faster than reading it — SQLite's B-trees keep no subtree counts, and DynamoDB has no count primitive: a `Select: COUNT` Query reads and bills every entry — so whatever is not kept as a count is read. Counts per priority are cheap to keep exact: they move by one in each transaction that moves a QUEUED request (SQLite: one UPSERT of a `queued_by_priority` row next to `queue_counters`; DynamoDB: `ADD queued_p<n>` in the counters Update each such transaction already has — no extra item, call or contention point), where a per-request rank would change for every request behind at each claim or cancel. Within a priority each tenant's requests start first in, first out, so what is not counted is a walk of a tenant's range, and SQLite starts it at the nearer end; a list page pays it once per tenant and priority instead of once per item.",
    );
    lines.push(
      `- **What still grows.** The depth within one priority: a backlog concentrated at one priority (here half the queue at the default 0) makes a status in the middle of a tenant's long range at that priority, or a page deep in it, walk up to half the range on SQLite (${peakText}); on DynamoDB nothing grows with the depth since issue 15, except while a request dated before one already placed waits in its tenant's sequence (clock skew; that sequence is counted on the index until it starts). A DynamoDB counters item whose split does not add up to \`queued\` (written before the split existed, or edited by hand) makes positions count the whole index ahead, as before, until \`recount --fix\` writes the split; the submit then answers from one position count.`,
    );

    const summary: SummaryRow[] = [
      {
        measure: `SQLite list(limit=100) p50, page without QUEUED items, ${fmtInt(large)} vs ${fmtInt(small)} stored`,
        value: ms((httpOf(el, "listSucceeded") as HttpMeasure).dist.p50),
        floor: ms((httpOf(es, "listSucceeded") as HttpMeasure).dist.p50),
        ratio: listNoQueued("listSucceeded"),
      },
      {
        measure: `SQLite list(limit=100) p50, first page (QUEUED items' positions), ${fmtInt(large)} vs ${fmtInt(small)} stored`,
        value: ms(lFirst.dist.p50),
        floor: ms(sFirst.dist.p50),
        ratio: ratioText(lFirst.dist.p50, sFirst.dist.p50),
      },
      {
        measure: `SQLite status p50, priority 0 at #${fmtInt(hLowHead.position ?? 0)} behind priorities 1–9 vs #${fmtInt(hShallow.position ?? 0)} (${fmtInt(large)} stored)`,
        value: ms(hLowHead.dist.p50),
        floor: ms(hShallow.dist.p50),
        ratio: ratioText(hLowHead.dist.p50, hShallow.dist.p50),
      },
      {
        measure: `SQLite status p50, #${fmtInt(hLowTail.within ?? 0)} within priority 0 (#${fmtInt(hLowTail.position ?? 0)}) vs #${fmtInt(hShallow.position ?? 0)} (${fmtInt(large)} stored)`,
        value: ms(hLowTail.dist.p50),
        floor: ms(hShallow.dist.p50),
        ratio: ratioText(hLowTail.dist.p50, hShallow.dist.p50),
      },
      {
        measure: `DynamoDB list(limit=100) RRU, first page, ${fmtInt(awsLarge)} vs ${fmtInt(awsSmall)} stored (store.list)`,
        value: fmtRru(alFirst.usage.rru),
        floor: fmtRru((dynOf(as, "listFirst") as DynamoMeasure).usage.rru),
        ratio: ratioText(alFirst.usage.rru, (dynOf(as, "listFirst") as DynamoMeasure).usage.rru),
      },
      {
        measure: `DynamoDB list endpoint RRU, first page with positions, ${fmtInt(awsLarge)} vs ${fmtInt(awsSmall)} stored (store.list + store.positions, measured)`,
        value: fmtRru(endpointLarge.rru),
        floor: fmtRru(endpointSmall.rru),
        ratio: ratioText(endpointLarge.rru, endpointSmall.rru),
      },
      {
        measure: `DynamoDB RRU of a status position, priority 0 at #${fmtInt(dLowHead.position ?? 0)} behind priorities 1–9 (vs GetItem's 1)`,
        value: fmtRru(dLowHead.usage.rru),
        floor: "1",
        ratio: ratioText(dLowHead.usage.rru, 1),
      },
      {
        measure: `DynamoDB RRU of a status position #${fmtInt(dLowTail.within ?? 0)} within priority 0 (#${fmtInt(dLowTail.position ?? 0)}; vs GetItem's 1)`,
        value: fmtRru(dLowTail.usage.rru),
        floor: "1",
        ratio: ratioText(dLowTail.usage.rru, 1),
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
        sqlitePositionPeak: { within: peak.within, p50Us: peak.p50Us },
        aws: aws.map((a) => ({
          ...a,
          measures: a.measures.map(({ motoMs, ...rest }) => ({ ...rest, motoMs })),
        })),
        dynamoPosition: {
          readyEntryBytes: entryBytes,
          countersBytes: al.countersBytes,
          countersRru,
          rruPer1000PositionsWithinPriority: rruPer1000,
          rruByDepthWithinPriority: Object.fromEntries(
            [10, 1_000, 10_000, 50_000, 1_000_000].map((d) => [d, statusRru(d)]),
          ),
          formulaCheck,
        },
        dynamoListEndpoint: {
          measured: "store.list + store.positions of the first page, metered",
          small: endpointSmall,
          large: endpointLarge,
          beforeC56269f: {
            computed: "page read measured + one COUNT Query per QUEUED item over the queue ahead",
            small: beforeSmall,
            large: beforeLarge,
          },
        },
      },
      summary,
    };
  },
};
