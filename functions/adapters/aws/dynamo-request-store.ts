/**
 * RequestStore on one DynamoDB table (the single-table layout of definitions.ts).
 *
 * Every state change is one conditional write: a TransactWriteItems when a queue counter
 * moves with the request, a single UpdateItem otherwise. Reads made before a write only
 * learn attributes that never change (tenant, queue, createdAt, expiresAt, …) or are
 * re-checked by the write's condition, so a stale read can never make a wrong write.
 */

import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  BatchGetCommand,
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  type QueryCommandInput,
  TransactWriteCommand,
  type TransactWriteCommandInput,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import { decodeTime } from "ulidx";
import type { RateLimit } from "../../config/schema.ts";
import {
  ConcurrentUpdateError,
  IdempotencyConflictError,
  InvalidRequestError,
  QueueFullError,
  RateLimitedError,
} from "../../core/errors.ts";
import type {
  ClaimLimits,
  ClaimPass,
  ClaimResult,
  IdempotencyClaim,
  ListPage,
  ListQuery,
  QueueCounts,
  RateLimitState,
  RequestStore,
  RunStats,
  SubmitLimits,
  SubmitOutcome,
  TransitionCommand,
  UsageFigures,
} from "../../core/ports.ts";
import { peekBucket, takeToken, tokenInterval } from "../../core/rate-limit.ts";
import {
  ACTIVE_STATUSES,
  counterDelta,
  type RequestPatch,
  type RequestRecord,
  RequestStatus,
  readyOrderKey,
  statusClass,
} from "../../core/request.ts";
import {
  assertTransitionCommand,
  decodeListCursor,
  encodeListCursor,
  type FairTenant,
  fairPositionFinish,
  fairPositionPlan,
} from "../../core/store-support.ts";
import { INDEXES, TABLE_KEY, TTL_ATTRIBUTE } from "./definitions.ts";
import { ItemMemo } from "./item-memo.ts";
import {
  CAPACITY_WAIT_ATTRIBUTE,
  countersKey,
  escapeTenant,
  ITEM_KIND,
  idemKey,
  idemKeyOfPk,
  idemPk,
  type RequestItem,
  requestIdOfPk,
  requestKey,
  seqPointerKey,
  unescapeTenant,
} from "./items.ts";

/** Options of {@link DynamoRequestStore}. */
export interface DynamoRequestStoreOptions {
  /** Made once by the caller; a plain DynamoDBClient is wrapped in a document client. */
  client: DynamoDBDocumentClient | DynamoDBClient;
  tableName: string;
  /**
   * The configured queue names. findActive, findExpired and recount read the sweep index
   * one queue at a time (a partition per queue), because listing all queues would need a
   * Scan.
   */
  queues: () => readonly string[];
  /** Days a finished request (and its idempotency key) is kept before TTL deletes it. */
  retentionDaysFor?: (queue: string) => number;
  /**
   * Epoch ms; used for the TTL of a request finished without a `finishedAt`, and for the
   * age of a dispatch pass's view of a queue (claimNext).
   */
  now?: () => number;
}

/** Options for {@link DynamoRequestStore.recount}. */
export interface RecountOptions {
  /** Also overwrite the stored counters with the recomputed ones (repair). */
  fix?: boolean;
}

const DEFAULT_RETENTION_DAYS = 30;
const SECONDS_PER_DAY = 86_400;
/** Ready-index entries read per claim round: enough to step over a few stale entries. */
const CLAIM_CANDIDATES = 5;
/** Query rounds a claim makes before giving up to a heavy contention. */
const CLAIM_ROUNDS = 8;
/**
 * Age after which a dispatch pass reads the counters item again: a pass that fills many
 * slots sees a request of a higher priority that arrived meanwhile within about this long,
 * as a new pass would.
 */
const PASS_VIEW_MS = 1000;
/** Attempts of one write that keeps meeting transaction conflicts or throttling. */
const CONFLICT_ATTEMPTS = 8;
/** BatchGetItem accepts at most 100 keys per call. */
const BATCH_GET_MAX = 100;

/** One item update, usable alone (UpdateItem) and inside TransactWriteItems. */
interface ItemUpdate {
  TableName: string;
  Key: Record<string, string>;
  UpdateExpression: string;
  ConditionExpression: string;
  ExpressionAttributeNames?: Record<string, string>;
  ExpressionAttributeValues?: Record<string, unknown>;
}

/** Keeps equal-width decimal strings, so that string order is numeric order. */
function pad(n: number): string {
  return String(n).padStart(15, "0");
}

/** Priorities a request may have (SPEC: 0–9), for the per-priority counters. */
const PRIORITIES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] as const;

/** Counter attribute of the QUEUED requests of one priority (next to `queued`, their sum). */
function queuedAt(priority: number): string {
  return `queued_p${priority}`;
}

/** The counters item's `queued` split by priority; null when the split does not add up. */
function queuedByPriority(counters: Record<string, unknown> | undefined): number[] | null {
  const split = PRIORITIES.map((p) => (counters?.[queuedAt(p)] as number | undefined) ?? 0);
  const total = (counters?.queued as number | undefined) ?? 0;
  // Written in the same transactions as `queued`, so they always agree, except on a counters
  // item from before the split existed (or one repaired by hand): then positions count rows.
  return split.reduce((a, b) => a + b, 0) === total ? split : null;
}

/**
 * Per-tenant figures live on the queue's counters item beside `queued` and `running`, one
 * top-level attribute each (ADD works on top-level attributes only, and creates them):
 * `tq#<tenant>` QUEUED, `tq<p>#<tenant>` QUEUED at priority p, `tr#<tenant>` STARTING +
 * RUNNING, `tb#<tenant>` the arrival time of its token bucket (core/rate-limit.ts), and
 * `th#<tenant>` the ready key of its head as far as the writers know it (a hint; see
 * docs/design.md "Fair claim on DynamoDB").
 */
type TenantField =
  | "q"
  | "r"
  | "b"
  | "h"
  | `q${number}`
  | `i${number}`
  | `c${number}`
  | `k${number}`
  | `x${number}`;

/** Name of a per-tenant figure on the counters item (exported for the bench's seeding). */
export function tenantAttr(field: TenantField, tenant: string): string {
  return `t${field}#${escapeTenant(tenant)}`;
}

const TENANT_ATTR = /^t(q[0-9]?|r|b|h)#(.*)$/s;

/** One tenant's figures as the counters item holds them. */
interface TenantFigures {
  queued: number;
  /** QUEUED by priority, index 0–9. */
  byPriority: number[];
  running: number;
  bucketAt: number | null;
  /** The head hint (`th#`): a ready key, null when the item holds none. */
  head?: string | null;
}

/** Every tenant the counters item has figures for. */
function tenantFigures(counters: Record<string, unknown> | undefined): Map<string, TenantFigures> {
  const out = new Map<string, TenantFigures>();
  for (const [name, value] of Object.entries(counters ?? {})) {
    const m = TENANT_ATTR.exec(name);
    const field = m?.[1];
    if (!m || (typeof value !== "number" && !(field === "h" && typeof value === "string"))) {
      continue;
    }
    const tenant = unescapeTenant(m[2] as string);
    let f = out.get(tenant);
    if (!f) {
      f = { queued: 0, byPriority: PRIORITIES.map(() => 0), running: 0, bucketAt: null };
      out.set(tenant, f);
    }
    if (typeof value === "string") f.head = value;
    else if (field === "q") f.queued = value;
    else if (field === "r") f.running = value;
    else if (field === "b") f.bucketAt = value;
    else f.byPriority[Number((field as string).slice(1))] = value;
  }
  return out;
}

/**
 * One tenant's submit sequence at one priority of a queue (docs/design.md "Positions in
 * O(1)"): `issued` places given out so far (`ti<p>#<tenant>`, the next request's `seq`),
 * `queued` of them still QUEUED (`tq<p>#<tenant>`), and `removed`, ascending, the places of
 * requests that left QUEUED other than by a claim of the head (`tc<p>#<tenant>`, a number
 * set; places below the head may have been pruned from it). Every other place that left is
 * below every waiting one (claims take the head), so counts give ranks: no index is read.
 *
 * Places follow the order in which submits commit; requests start in the order of their
 * ready keys (age). A submit dated before the newest one already placed (`tk<p>#<tenant>`,
 * its createdAt; another host's clock, or two submits in one millisecond) is "late": it
 * gets a place, is counted in `late` (`tx<p>#<tenant>`) until it leaves QUEUED, and while
 * any is, the stream's positions are counted on the index as before sequences.
 */
interface Stream {
  issued: number;
  queued: number;
  removed: number[];
  late: number;
  /** createdAt of the newest request placed in order (`tk<p>#<tenant>`). */
  last: number | null;
}

/** The stream of `tenant` at `priority` on a counters item; null before its first stamp. */
function streamOf(
  counters: Record<string, unknown> | undefined,
  tenant: string,
  priority: number,
): Stream | null {
  const issued = counters?.[tenantAttr(`i${priority}`, tenant)];
  if (typeof issued !== "number") return null;
  const queued = counters?.[tenantAttr(`q${priority}`, tenant)];
  const removed = counters?.[tenantAttr(`c${priority}`, tenant)];
  const late = counters?.[tenantAttr(`x${priority}`, tenant)];
  const last = counters?.[tenantAttr(`k${priority}`, tenant)];
  return {
    last: typeof last === "number" ? last : null,
    issued,
    queued: typeof queued === "number" ? queued : 0,
    removed: removed instanceof Set ? [...(removed as Set<number>)].sort((a, b) => a - b) : [],
    late: typeof late === "number" ? late : 0,
  };
}

/** The same, from an item returned with a cancellation (marshalled form). */
function rawStreamOf(item: Reason["Item"], tenant: string, priority: number): Stream | null {
  const issued = rawNumber(item, tenantAttr(`i${priority}`, tenant));
  if (issued === null) return null;
  const set = (item?.[tenantAttr(`c${priority}`, tenant)] as { NS?: string[] } | undefined)?.NS;
  return {
    issued,
    queued: rawNumber(item, tenantAttr(`q${priority}`, tenant)) ?? 0,
    removed: (set ?? []).map(Number).sort((a, b) => a - b),
    late: rawNumber(item, tenantAttr(`x${priority}`, tenant)) ?? 0,
    last: rawNumber(item, tenantAttr(`k${priority}`, tenant)),
  };
}

/** What a submit assumes of its stream (from the last counters item this instance read). */
interface StreamGuess {
  issued: number | null;
  queued: number;
  last: number | null;
  /** Places to drop from the stream's `removed` (below its head). */
  prune: number[];
}

/** Map key of one tenant's stream at one priority of a queue. */
function streamKey(queue: string, tenant: string, priority: number): string {
  return `${queue}\u0000${tenant}\u0000${priority}`;
}

/** Places that left at the head (or before sequences began): issued − queued − removed. */
function headLeft(s: Stream): number {
  return s.issued - s.queued - s.removed.length;
}

/**
 * Requests of the stream still QUEUED before the one at place `seq`: its place minus those
 * that left below it. Null when the figures do not fit (a hand-repaired counters item):
 * the caller counts on the index instead.
 */
function rankInStream(s: Stream, seq: number): number | null {
  const left = headLeft(s);
  const rank = seq - left - s.removed.filter((c) => c < seq).length;
  const fits = s.late <= 0 && left >= 0 && seq < s.issued;
  return fits && rank >= 0 && rank < s.queued ? rank : null;
}

/** Place of the stream's `index`-th (0-based) QUEUED request; null when there is none. */
function placeInStream(s: Stream, index: number): number | null {
  if (s.late > 0 || headLeft(s) < 0 || index < 0 || index >= s.queued) return null;
  // The (left + index)-th place not in `removed`.
  let place = headLeft(s) + index;
  for (const c of s.removed) {
    if (c <= place) place++;
    else break;
  }
  return place < s.issued ? place : null;
}

/** Places in `removed` below the head: no rank needs them any more (a submit drops them). */
function prunable(s: Stream): number[] {
  // With a late request waiting the head is not known from the counts: keep them all.
  if (s.late > 0) return [];
  const head = placeInStream(s, 0) ?? s.issued;
  return s.removed.filter((c) => c < head);
}

const DAY_MS = 86_400_000;
/**
 * Days behind the current one whose run-time figures each finish removes (two days are
 * read): a queue idle for longer keeps at most that many stale pairs of attributes.
 */
const RUN_DAYS_SWEPT = 8;

/** A request leaving its slot for good: its day and run time, if it ever ran. */
function runTime(item: RequestItem, cmd: TransitionCommand): { day: number; ms: number } | null {
  const startedAt = (cmd.set?.startedAt ?? item.startedAt) as number | null | undefined;
  const finishedAt = (cmd.set?.finishedAt ?? item.finishedAt) as number | null | undefined;
  if (typeof startedAt !== "number" || typeof finishedAt !== "number") return null;
  return { day: Math.floor(finishedAt / DAY_MS), ms: Math.max(0, finishedAt - startedAt) };
}

/** The run-time summary of `now`'s day and the one before, from a counters item. */
function runStatsOf(counters: Record<string, unknown> | undefined, now: number): RunStats | null {
  const today = Math.floor(now / DAY_MS);
  let total = 0;
  let n = 0;
  for (const day of [today, today - 1]) {
    total += (counters?.[`rs#${day}`] as number | undefined) ?? 0;
    n += (counters?.[`rn#${day}`] as number | undefined) ?? 0;
  }
  return n > 0 ? { meanMs: total / n, samples: n } : null;
}

/** What a wait is computed from, all on the counters item. */
function usageOf(
  counters: Record<string, unknown> | undefined,
  tenant: string,
  now: number,
): UsageFigures {
  const f = tenantFigures(counters).get(tenant);
  return {
    queue: {
      queued: (counters?.queued as number | undefined) ?? 0,
      running: (counters?.running as number | undefined) ?? 0,
    },
    tenant: { queued: f?.queued ?? 0, running: f?.running ?? 0 },
    run: runStatsOf(counters, now),
  };
}

/** Whether two sets of tenant figures agree on every count (buckets aside). */
function sameTenantFigures(
  a: ReadonlyMap<string, TenantFigures>,
  b: ReadonlyMap<string, TenantFigures>,
): boolean {
  for (const tenant of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(tenant);
    const y = b.get(tenant);
    if ((x?.queued ?? 0) !== (y?.queued ?? 0) || (x?.running ?? 0) !== (y?.running ?? 0)) {
      return false;
    }
    if (PRIORITIES.some((p) => (x?.byPriority[p] ?? 0) !== (y?.byPriority[p] ?? 0))) return false;
  }
  return true;
}

/** Highest priority a tenant has QUEUED requests at; -1 for none. */
function topPriority(f: TenantFigures): number {
  for (let p = 9; p >= 0; p--) if ((f.byPriority[p] ?? 0) > 0) return p;
  return -1;
}

/** What one dispatch pass knows of a queue (claimNext's `pass`). */
interface PassState {
  /** The counters item as read at the pass's first claim, moved by the pass's own claims. */
  counters: Record<string, unknown> | null;
  /** When `counters` was read (the store's clock). */
  readAt: number;
  /** Ready keys read per tenant, in start order; those tried are taken off. */
  ready: Map<string, string[]>;
}

/** A waiting tenant a claim may pick. */
interface ClaimCandidate {
  tenant: string;
  figures: TenantFigures;
  priority: number;
  active: number;
}

/** The tenant picked, with its head read when the hint named its only request. */
interface PickedTenant extends ClaimCandidate {
  item: RequestItem | null;
}

/** The limits and hint move of one claim write. */
interface ClaimWrite {
  maxRunning: number;
  tenantMaxRunning: number;
  now: number;
  /** The tenant's next head: a ready key, null for none (the hint goes), undefined: keep. */
  nextHead: string | null | undefined;
}

/** The request id in a ready key (`<9-priority>#<createdAt>#<id>`, request.ts). */
function readyKeyId(key: string): string {
  return key.split("#")[2] as string;
}

/** What every ready key of `priority` begins with. */
function readyKeyPrefix(priority: number): string {
  return `${9 - priority}#`;
}

/** The priority of a ready key. */
function readyKeyPriority(key: string): number {
  return 9 - Number(key.split("#")[0]);
}

/**
 * What is known of a tenant's head at priority `top`: entries read in this pass, or its
 * hinted request read and found QUEUED (sure); else its hint at that priority (a guess:
 * no later than the true head but for the cases docs/design.md lists); else nothing.
 */
function knownHead(
  t: ClaimCandidate,
  top: number,
  state: PassState,
  checked: ReadonlyMap<string, RequestItem>,
): { key: string; sure: boolean } | null {
  const read = state.ready.get(t.tenant)?.[0];
  if (read !== undefined) return { key: read, sure: true };
  const item = checked.get(t.tenant);
  if (item) return { key: item[INDEXES.ready.sortKey] as string, sure: true };
  const hint = t.figures.head;
  // A hint at another priority says nothing of the head at `top`.
  if (hint && readyKeyPriority(hint) === top) return { key: hint, sure: false };
  return null;
}

/** Moves a pass's snapshot as a claim (started) or an expiry moved the counters item. */
function moveSnapshot(
  state: PassState,
  item: RequestItem,
  started: boolean,
  nextHead: string | null | undefined,
): void {
  const c = state.counters;
  if (!c) return;
  const add = (name: string, by: number) => {
    c[name] = ((c[name] as number | undefined) ?? 0) + by;
  };
  for (const name of [
    "queued",
    queuedAt(item.priority),
    tenantAttr("q", item.tenant),
    tenantAttr(`q${item.priority}`, item.tenant),
  ]) {
    add(name, -1);
  }
  if (!started) return;
  add("running", 1);
  add(tenantAttr("r", item.tenant), 1);
  if (nextHead === null) delete c[tenantAttr("h", item.tenant)];
  else if (nextHead !== undefined) c[tenantAttr("h", item.tenant)] = nextHead;
}

/** A number attribute of an item returned with a cancellation (marshalled form). */
function rawNumber(item: Reason["Item"], name: string): number | null {
  const n = (item?.[name] as { N?: string } | undefined)?.N;
  return n === undefined ? null : Number(n);
}

function listPk(tenant: string, queue: string): string {
  return `${tenant}#${queue}`;
}

function listSk(createdAt: number, id: string): string {
  return `${pad(createdAt)}#${id}`;
}

function statusPk(tenant: string, queue: string, status: RequestStatus): string {
  return `${tenant}#${queue}#${status}`;
}

/** One ready partition per tenant and queue (docs/design.md "Fair claim on DynamoDB"). */
function readyPk(queue: string, tenant: string): string {
  return `READY#${queue}#${escapeTenant(tenant)}`;
}

function sweepQueuedPk(queue: string): string {
  return `QUEUED#${queue}`;
}

function sweepActivePk(queue: string): string {
  return `ACTIVE#${queue}`;
}

/** Sweep sort keys carry the id after the instant so that equal instants keep a stable order. */
function sweepSk(at: number, id: string): string {
  return `${pad(at)}#${id}`;
}

/** A JSON round trip: drops `undefined` (which DynamoDB cannot store) and non-finite numbers. */
function plain<T>(value: T): T {
  return value === null || value === undefined
    ? (null as T)
    : (JSON.parse(JSON.stringify(value)) as T);
}

/**
 * The item a submit writes for a QUEUED record (exported for bulk loading, e.g. the
 * benchmarks; a request in another status also has other index keys, see #changeStatus).
 */
export function toItem(r: RequestRecord, idem: IdempotencyClaim | null): RequestItem {
  return {
    ...requestKey(r.id),
    id: r.id,
    tenant: r.tenant,
    queue: r.queue,
    status: r.status,
    priority: r.priority,
    // A string, not a map: DynamoDB caps nesting at 32 levels and numbers at 38 digits, and
    // `input` is any JSON the caller sent.
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
    platformRetries: r.platformRetries,
    cancelRequested: r.cancelRequested,
    timeoutSeconds: r.timeoutSeconds,
    queueTtlSeconds: r.queueTtlSeconds,
    expiresAt: r.expiresAt,
    progress: plain(r.progress),
    error: plain(r.error),
    jobRef: r.jobRef,
    // Written only when set, so items of requests without them stay as they were.
    ...(r.files && Object.keys(r.files).length > 0 ? { files: plain(r.files) } : {}),
    ...(r.retryOf ? { retryOf: r.retryOf } : {}),
    ...(r.capacityWait ? { [CAPACITY_WAIT_ATTRIBUTE]: plain(r.capacityWait) } : {}),
    rev: 0,
    ...(idem ? { idemPk: idemPk(r.tenant, idem.key) } : {}),
    [INDEXES.ready.partitionKey]: readyPk(r.queue, r.tenant),
    [INDEXES.ready.sortKey]: readyOrderKey(r),
    [INDEXES.list.partitionKey]: listPk(r.tenant, r.queue),
    [INDEXES.list.sortKey]: listSk(r.createdAt, r.id),
    [INDEXES.listByStatus.partitionKey]: statusPk(r.tenant, r.queue, r.status),
    [INDEXES.sweep.partitionKey]: sweepQueuedPk(r.queue),
    [INDEXES.sweep.sortKey]: sweepSk(r.expiresAt, r.id),
  };
}

/**
 * The pointer a submit writes with its request (items.ts seqPointerKey): which request took
 * place `seq`, and its ready key (how old it is). Kept a day past the request's expiry,
 * after which the request cannot be QUEUED; a position that finds no pointer reads the index.
 */
export function seqPointerItem(r: RequestRecord, seq: number): Record<string, unknown> {
  return {
    ...seqPointerKey(r.queue, r.tenant, r.priority, seq),
    requestId: r.id,
    readyKey: readyOrderKey(r),
    [TTL_ATTRIBUTE]: Math.ceil(r.expiresAt / 1000) + SECONDS_PER_DAY,
  };
}

function fromItem(item: Record<string, unknown>): RequestRecord {
  // toItem writes every field; nullable ones are still read defensively (`?? null`) so an
  // item edited by hand without them reads as "not set" rather than undefined.
  const i = item as unknown as Omit<RequestRecord, "input"> & { input: string };
  return {
    id: i.id,
    tenant: i.tenant,
    queue: i.queue,
    status: i.status,
    priority: i.priority,
    input: JSON.parse(i.input) as unknown,
    metadata: i.metadata ?? {},
    webhook: i.webhook ?? null,
    idempotencyKey: i.idempotencyKey ?? null,
    createdAt: i.createdAt,
    startedAt: i.startedAt ?? null,
    finishedAt: i.finishedAt ?? null,
    updatedAt: i.updatedAt ?? i.createdAt,
    attempt: i.attempt,
    maxAttempts: i.maxAttempts,
    // Items written before the field existed have had no platform retry.
    platformRetries: i.platformRetries ?? 0,
    cancelRequested: i.cancelRequested === true,
    timeoutSeconds: i.timeoutSeconds,
    queueTtlSeconds: i.queueTtlSeconds,
    expiresAt: i.expiresAt,
    progress: i.progress ?? null,
    error: i.error ?? null,
    jobRef: i.jobRef ?? null,
    // Only when set, so a record without them reads back exactly as it was written.
    ...(i.files ? { files: i.files } : {}),
    ...(i.retryOf ? { retryOf: i.retryOf } : {}),
    ...(item[CAPACITY_WAIT_ATTRIBUTE]
      ? { capacityWait: item[CAPACITY_WAIT_ATTRIBUTE] as RequestRecord["capacityWait"] }
      : {}),
  };
}

/** Collects attribute names and values while an expression is built. */
class Expression {
  readonly names: Record<string, string> = {};
  readonly values: Record<string, unknown> = {};
  #next = 0;

  /** Every name goes through a placeholder: `status`, `ttl`, `input` are reserved words. */
  name(attribute: string): string {
    const placeholder = `#${attribute}`;
    this.names[placeholder] = attribute;
    return placeholder;
  }

  value(v: unknown): string {
    const placeholder = `:v${this.#next++}`;
    this.values[placeholder] = v;
    return placeholder;
  }

  /** The fields DynamoDB wants, leaving out empty maps (which it refuses). */
  params(): {
    ExpressionAttributeNames?: Record<string, string>;
    ExpressionAttributeValues?: Record<string, unknown>;
  } {
    return {
      ...(Object.keys(this.names).length > 0 ? { ExpressionAttributeNames: this.names } : {}),
      ...(Object.keys(this.values).length > 0 ? { ExpressionAttributeValues: this.values } : {}),
    };
  }
}

/** SET and REMOVE clauses of one UpdateExpression. */
class UpdateClauses {
  readonly #set: string[] = [];
  readonly #remove: string[] = [];

  constructor(readonly expr: Expression) {}

  set(attribute: string, value: unknown): this {
    this.#set.push(`${this.expr.name(attribute)} = ${this.expr.value(value)}`);
    return this;
  }

  increment(attribute: string): this {
    const n = this.expr.name(attribute);
    this.#set.push(`${n} = ${n} + ${this.expr.value(1)}`);
    return this;
  }

  remove(...attributes: string[]): this {
    for (const a of attributes) this.#remove.push(this.expr.name(a));
    return this;
  }

  toString(): string {
    const parts: string[] = [];
    if (this.#set.length > 0) parts.push(`SET ${this.#set.join(", ")}`);
    if (this.#remove.length > 0) parts.push(`REMOVE ${this.#remove.join(", ")}`);
    return parts.join(" ");
  }
}

/** Raised inside a retried operation when DynamoDB asks us to try again. */
class TransientConflict extends Error {
  override name = "TransientConflict";
}

/** Cancellation reason codes that mean "another writer was busy", not "the condition failed". */
const TRANSIENT_REASONS = new Set([
  "TransactionConflict",
  "ThrottlingError",
  "ProvisionedThroughputExceeded",
  "RequestLimitExceeded",
]);

interface Reason {
  Code?: string | undefined;
  Item?: Record<string, { S?: string } | undefined> | undefined;
}

/** The cancellation reasons of a cancelled transaction; null for any other error. */
function cancellationReasons(error: unknown): Reason[] | null {
  if ((error as { name?: string } | null)?.name !== "TransactionCanceledException") return null;
  return ((error as { CancellationReasons?: Reason[] }).CancellationReasons ?? []) as Reason[];
}

function failed(reason: Reason | undefined): boolean {
  return reason?.Code === "ConditionalCheckFailed";
}

function isConditionalCheckFailed(error: unknown): boolean {
  return (error as { name?: string } | null)?.name === "ConditionalCheckFailedException";
}

/** A plain (non-transactional) write that met a running transaction on the same item. */
function isTransientWriteError(error: unknown): boolean {
  return (error as { name?: string } | null)?.name === "TransactionConflictException";
}

/**
 * Rethrows a cancelled transaction as {@link TransientConflict} when some item only met a
 * concurrent writer; any other error (or reason) is returned for the caller to judge.
 */
function throwIfTransient(reasons: Reason[], cause: unknown): void {
  if (reasons.some((r) => r.Code !== undefined && TRANSIENT_REASONS.has(r.Code))) {
    throw new TransientConflict("transaction conflict", { cause });
  }
}

/** Whether the stored request satisfies the command's condition. */
function conditionHolds(item: RequestItem, cmd: TransitionCommand): boolean {
  if (!cmd.from.includes(item.status)) return false;
  if (cmd.attempt !== undefined && item.attempt !== cmd.attempt) return false;
  if (
    cmd.cancelRequested !== undefined &&
    (item.cancelRequested === true) !== cmd.cancelRequested
  ) {
    return false;
  }
  return true;
}

/**
 * The item as a transition conditioned on its `rev` leaves it: what a read right after the
 * write would return (the index and TTL attributes aside, which records do not carry).
 */
function applyTransition(
  item: RequestItem,
  cmd: TransitionCommand,
  to: RequestStatus,
): RequestItem {
  const next: RequestItem = { ...item, status: to, rev: item.rev + 1 };
  for (const field of PATCH_FIELDS) {
    const value = cmd.set?.[field];
    if (value !== undefined) (next as Record<string, unknown>)[field] = plain(value);
  }
  return next;
}

const PATCH_FIELDS = [
  "startedAt",
  "finishedAt",
  "updatedAt",
  "attempt",
  "platformRetries",
  "progress",
  "error",
  "jobRef",
  "cancelRequested",
  CAPACITY_WAIT_ATTRIBUTE,
] as const satisfies readonly (keyof RequestPatch)[];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * {@link RequestStore} on DynamoDB (AWS SDK v3). Safe under any number of concurrent
 * instances: every decision is re-checked by the condition of the write that acts on it,
 * and the per-queue counters move in the same transaction as the request.
 *
 * Index upkeep follows the status: `readyPk/readySk` only while QUEUED, `statusPk` always
 * `<tenant>#<queue>#<status>`, `sweepPk` `QUEUED#<queue>` / `ACTIVE#<queue>` and gone once
 * terminal, when the item also gets its `ttl` (finishedAt + the queue's retention).
 */
export class DynamoRequestStore implements RequestStore {
  readonly #doc: DynamoDBDocumentClient;
  readonly #table: string;
  readonly #queues: () => readonly string[];
  readonly #retentionDaysFor: (queue: string) => number;
  readonly #now: () => number;
  /** Items last read or written here: see {@link ItemMemo} for why stale ones are safe. */
  readonly #memo = new ItemMemo<RequestItem>();
  /**
   * Last known bucket arrival time per queue and tenant: it picks which of the two bucket
   * writes a submit makes (see #bucketUpdate); a wrong guess costs one more transaction.
   */
  readonly #buckets = new Map<string, number>();
  /**
   * Last known head hint per queue and tenant, kept only to pick the shape of a submit's
   * hint update (see #counterUpdate); a wrong guess costs one more transaction.
   */
  readonly #heads = new Map<string, string>();
  /** What each dispatch pass knows (claimNext's `pass`); gone with the pass. */
  readonly #passes = new WeakMap<ClaimPass, Map<string, PassState>>();
  /**
   * Last known submit sequence per queue, tenant and priority: the submit stamps the next
   * place under a condition that the counters item still holds this (see #counterUpdate);
   * a wrong guess is cancelled with the item as it was and sent again.
   */
  readonly #streams = new Map<string, StreamGuess>();
  /** `seq` of the request items last read or written here (it never changes). */
  readonly #seqs = new ItemMemo<{ seq: number }>(4096);
  /** The last submit in flight per stream: the next one waits for it (see submit). */
  readonly #submitting = new Map<string, Promise<void>>();

  constructor(options: DynamoRequestStoreOptions) {
    this.#doc =
      options.client instanceof DynamoDBClient
        ? DynamoDBDocumentClient.from(options.client, {
            marshallOptions: { removeUndefinedValues: true },
          })
        : options.client;
    this.#table = options.tableName;
    this.#queues = options.queues;
    this.#retentionDaysFor = options.retentionDaysFor ?? (() => DEFAULT_RETENTION_DAYS);
    this.#now = options.now ?? Date.now;
  }

  // ---------------------------------------------------------------- submit

  async submit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
  ): Promise<SubmitOutcome> {
    if (request.status !== RequestStatus.QUEUED) {
      throw new Error(
        `submit of ${request.id}: a new request must be QUEUED, not ${request.status}`,
      );
    }
    // The counter condition lets a first submit through on a queue without a counter item,
    // so a queue that admits nothing must be refused here.
    if (limits.maxQueued < 1) {
      throw new QueueFullError(request.queue, limits.maxQueued, limits.retryAfterSeconds);
    }
    // Submits of one tenant at one priority take places one after the other: this
    // instance's guess of the next place then holds for all but the first of a burst.
    const key = streamKey(request.queue, request.tenant, request.priority);
    const before = this.#submitting.get(key);
    let done = () => {};
    const mine = new Promise<void>((resolve) => {
      done = resolve;
    });
    const turn = (before ?? Promise.resolve()).then(() => mine);
    this.#submitting.set(key, turn);
    try {
      if (before) await before;
      return await this.#submitInTurn(request, idempotency, limits);
    } finally {
      done();
      if (this.#submitting.get(key) === turn) this.#submitting.delete(key);
    }
  }

  async #submitInTurn(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
  ): Promise<SubmitOutcome> {
    // At most one pass frees a key whose request retention has already deleted.
    const sent = { transactions: 0 };
    for (let pass = 0; ; pass++) {
      const outcome = await this.#retrying(() =>
        this.#trySubmit(request, idempotency, limits, sent),
      );
      if (outcome.kind !== "orphan-key") return outcome;
      if (pass > 0 || !idempotency) {
        throw new ConcurrentUpdateError(
          `idempotency key ${JSON.stringify(idempotency?.key)} keeps pointing at a deleted request`,
        );
      }
      await this.#releaseOrphanKey(request.tenant, idempotency.key, outcome.requestId);
    }
  }

  async #trySubmit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
    sent: { transactions: number },
  ): Promise<SubmitOutcome | { kind: "orphan-key"; requestId: string }> {
    // A second pass only follows a wrong guess of the bucket's state (#bucketUpdate), of
    // the head hint, or of the tenant's sequence (another instance submitted meanwhile).
    // Every transaction sent gets a token of its own (see #submitOnce).
    for (let pass = 0; pass < 8; pass++) {
      const outcome = await this.#submitOnce(request, idempotency, limits, sent.transactions++);
      if (outcome.kind !== "bucket-missed") return outcome;
    }
    throw new TransientConflict("the token bucket, the head hint or the sequence kept moving");
  }

  /**
   * The submit's counters update: the queue's and the tenant's QUEUED counts under their
   * limits and, with a rate limit, a token from the tenant's bucket. A bucket's arrival
   * time `at` moves to max(at, now) + interval; a condition cannot compute max, so the
   * write takes one of two shapes after what this instance last knew of `at`: idle
   * (at ≤ now: set now + interval) or busy (at > now: add the interval, at most burst − 1
   * intervals ahead). A cancellation returns the old item, which says the truth.
   */
  #counterUpdate(
    request: RequestRecord,
    limits: SubmitLimits,
  ): {
    update: ItemUpdate;
    bucket: { guess: number | null; decision: ReturnType<typeof takeToken> } | null;
    seq: number;
    late: boolean;
  } {
    const { queue, tenant, createdAt: now } = request;
    const adds = ["#queued :one", "#qp :one", "#tq :one", "#tqp :one"];
    const sets: string[] = [];
    const conditions = ["(attribute_not_exists(#queued) OR #queued < :max)"];
    // The tenant's head hint (claimNext) stays the earliest ready key at its priority. Set
    // when the tenant has none; kept when it is earlier, or at another priority (a claim
    // then reads the partition). A request earlier than the head at its own priority (the
    // clocks of two submitters) takes it over: a second shape, picked like the bucket's.
    if (this.#newHead(request, this.#heads.get(`${queue}\u0000${tenant}`))) {
      sets.push("#th = :head");
      conditions.push("(begins_with(#th, :prefix) AND #th > :head)");
    } else {
      sets.push("#th = if_not_exists(#th, :head)");
      conditions.push(
        "(attribute_not_exists(#th) OR #th < :head OR NOT begins_with(#th, :prefix))",
      );
    }
    const names: Record<string, string> = {
      "#queued": "queued",
      "#qp": queuedAt(request.priority),
      "#tq": tenantAttr("q", tenant),
      "#tqp": tenantAttr(`q${request.priority}`, tenant),
      "#th": tenantAttr("h", tenant),
      "#ti": tenantAttr(`i${request.priority}`, tenant),
    };
    const values: Record<string, unknown> = {
      ":one": 1,
      ":max": limits.maxQueued,
      ":head": readyOrderKey(request),
      ":prefix": readyKeyPrefix(request.priority),
    };
    // The request's place in its tenant's sequence at its priority. A first stamp starts
    // the sequence after the requests already waiting (written before sequences existed),
    // so their places are the lowest, as their age is.
    const stream: StreamGuess = this.#streams.get(streamKey(queue, tenant, request.priority)) ?? {
      issued: null,
      queued: 0,
      last: null,
      prune: [],
    };
    const seq = stream.issued ?? stream.queued;
    sets.push("#ti = :seqNext");
    names["#tk"] = tenantAttr(`k${request.priority}`, tenant);
    values[":seqNext"] = seq + 1;
    values[":seq"] = seq;
    values[":createdAt"] = request.createdAt;
    conditions.push(
      stream.issued !== null
        ? "#ti = :seq"
        : "attribute_not_exists(#ti) AND (attribute_not_exists(#tqp) OR #tqp = :seq)",
    );
    // In order: dated after every request placed before it. Late: counted until it leaves.
    const late = stream.last !== null && request.createdAt <= stream.last;
    if (late) {
      conditions.push("#tk >= :createdAt");
      names["#tx"] = tenantAttr(`x${request.priority}`, tenant);
      adds.push("#tx :one");
    } else {
      conditions.push("(attribute_not_exists(#tk) OR #tk < :createdAt)");
      sets.push("#tk = :createdAt");
    }
    let deletes = "";
    if (stream.prune.length > 0) {
      names["#tc"] = tenantAttr(`c${request.priority}`, tenant);
      values[":prune"] = new Set(stream.prune);
      deletes = " DELETE #tc :prune";
    }
    if (limits.maxQueuedPerTenant !== undefined) {
      conditions.push("(attribute_not_exists(#tq) OR #tq < :tmax)");
      values[":tmax"] = limits.maxQueuedPerTenant;
    }
    let bucket: { guess: number | null; decision: ReturnType<typeof takeToken> } | null = null;
    if (limits.rateLimit) {
      const policy: RateLimit = limits.rateLimit;
      const guess = this.#buckets.get(`${queue}\u0000${tenant}`) ?? null;
      const decision = takeToken(policy, guess, now);
      names["#tb"] = tenantAttr("b", tenant);
      values[":now"] = now;
      if (guess === null || guess <= now) {
        sets.push("#tb = :at");
        conditions.push("(attribute_not_exists(#tb) OR #tb <= :now)");
        values[":at"] = decision.allowed ? decision.at : now + tokenInterval(policy);
      } else {
        sets.push("#tb = #tb + :interval");
        conditions.push("(#tb > :now AND #tb <= :edge)");
        values[":interval"] = tokenInterval(policy);
        values[":edge"] = now + (policy.burst - 1) * tokenInterval(policy) + 1e-6;
      }
      bucket = { guess, decision };
    }
    return {
      update: {
        TableName: this.#table,
        Key: countersKey(queue),
        // ADD creates the counter item (and the attributes) on a queue's first submit.
        UpdateExpression: `SET ${sets.join(", ")} ADD ${adds.join(", ")}${deletes}`,
        ConditionExpression: conditions.join(" AND "),
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
      },
      bucket,
      seq,
      late,
    };
  }

  /** Which limit a cancelled submit met, judged on the counters item as it was. */
  #submitRefusal(
    request: RequestRecord,
    limits: SubmitLimits,
    old: Reason["Item"],
  ): Error | "bucket-missed" | null {
    if ((rawNumber(old, "queued") ?? 0) >= limits.maxQueued) {
      return new QueueFullError(request.queue, limits.maxQueued, limits.retryAfterSeconds);
    }
    if (
      limits.maxQueuedPerTenant !== undefined &&
      (rawNumber(old, tenantAttr("q", request.tenant)) ?? 0) >= limits.maxQueuedPerTenant
    ) {
      return new QueueFullError(
        request.queue,
        limits.maxQueuedPerTenant,
        limits.retryAfterSeconds,
        "tenant",
      );
    }
    // Which shape of the head hint's update was due, from the hint as it was.
    const hint = (old?.[tenantAttr("h", request.tenant)] as { S?: string } | undefined)?.S;
    const headKey = `${request.queue}\u0000${request.tenant}`;
    const headMissed =
      this.#newHead(request, hint) !== this.#newHead(request, this.#heads.get(headKey));
    if (headMissed) {
      if (hint === undefined) this.#heads.delete(headKey);
      else this.#heads.set(headKey, hint);
    }
    const stream = rawStreamOf(old, request.tenant, request.priority);
    const guess = this.#streams.get(streamKey(request.queue, request.tenant, request.priority));
    const seqMissed =
      (stream?.issued ?? null) !== (guess?.issued ?? null) ||
      (stream?.last ?? null) !== (guess?.last ?? null) ||
      (stream === null &&
        (rawNumber(old, tenantAttr(`q${request.priority}`, request.tenant)) ?? 0) !==
          (guess?.queued ?? 0));
    if (seqMissed) {
      this.#learnStream(
        request,
        stream,
        rawNumber(old, tenantAttr(`q${request.priority}`, request.tenant)),
      );
    }
    if (limits.rateLimit) {
      const at = rawNumber(old, tenantAttr("b", request.tenant));
      const key = `${request.queue}\u0000${request.tenant}`;
      if (at === null) this.#buckets.delete(key);
      else this.#buckets.set(key, at);
      const decision = takeToken(limits.rateLimit, at, request.createdAt);
      if (!decision.allowed) {
        return new RateLimitedError(request.queue, decision.retryAfterSeconds, decision.state);
      }
      return "bucket-missed";
    }
    return headMissed || seqMissed ? "bucket-missed" : null;
  }

  /** Whether `request` comes before `hint`, the tenant's head hint, at its own priority. */
  #newHead(request: RequestRecord, hint: string | undefined): boolean {
    if (hint === undefined) return false;
    return hint.startsWith(readyKeyPrefix(request.priority)) && hint > readyOrderKey(request);
  }

  /**
   * What this instance knows of a tenant's sequence at a priority, from a counters item it
   * read (`queued`: the tenant's QUEUED there, which a first stamp starts from).
   */
  #learnStream(
    request: Pick<RequestRecord, "queue" | "tenant" | "priority">,
    stream: Stream | null,
    queued: number | null,
  ): void {
    this.#streams.set(streamKey(request.queue, request.tenant, request.priority), {
      issued: stream?.issued ?? null,
      queued: stream?.queued ?? queued ?? 0,
      last: stream?.last ?? null,
      prune: stream ? prunable(stream) : [],
    });
  }

  async #submitOnce(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
    pass: number,
  ): Promise<
    SubmitOutcome | { kind: "orphan-key"; requestId: string } | { kind: "bucket-missed" }
  > {
    const items: NonNullable<TransactWriteCommandInput["TransactItems"]> = [];
    if (idempotency) {
      items.push({
        Put: {
          TableName: this.#table,
          Item: {
            ...idemKey(request.tenant, idempotency.key),
            requestId: request.id,
            bodyHash: idempotency.bodyHash,
          },
          ConditionExpression: "attribute_not_exists(#pk)",
          ExpressionAttributeNames: { "#pk": TABLE_KEY.partitionKey },
          // The holder's requestId and bodyHash come back with the cancellation: no extra read.
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        },
      });
    }
    const counters = this.#counterUpdate(request, limits);
    items.push({
      Put: {
        TableName: this.#table,
        Item: {
          ...toItem(request, idempotency),
          seq: counters.seq,
          ...(counters.late ? { seqLate: true } : {}),
        },
        ConditionExpression: "attribute_not_exists(#pk)",
        ExpressionAttributeNames: { "#pk": TABLE_KEY.partitionKey },
      },
    });
    items.push({ Update: { ...counters.update, ReturnValuesOnConditionCheckFailure: "ALL_OLD" } });
    // Last, so that the cancellation reasons above keep their places.
    items.push({ Put: { TableName: this.#table, Item: seqPointerItem(request, counters.seq) } });
    // The request id is new for every submit: AWS then ignores an SDK retry of a transaction
    // that did commit (its answer lost) instead of failing it on its own Put. Any later
    // transaction of the same submit (after a wrong guess, or a conflict retried) may send
    // other parameters, so it gets a token of its own: a token reused with other parameters
    // is refused (IdempotentParameterMismatch).
    const token = pass === 0 ? request.id : `${request.id}-${pass}`;
    try {
      await this.#doc.send(
        new TransactWriteCommand({
          TransactItems: items,
          ...(token.length <= 36 ? { ClientRequestToken: token } : {}),
        }),
      );
      const headKey = `${request.queue}\u0000${request.tenant}`;
      if (this.#newHead(request, this.#heads.get(headKey))) {
        // The second shape applied: this request is the tenant's head now.
        this.#heads.set(headKey, readyOrderKey(request));
      }
      let rateLimit: RateLimitState | undefined;
      if (counters.bucket && limits.rateLimit) {
        // Applied: the guess held, so the decision made on it is what was written.
        const { decision } = counters.bucket;
        const at = decision.allowed
          ? decision.at
          : request.createdAt + tokenInterval(limits.rateLimit);
        this.#buckets.set(`${request.queue}\u0000${request.tenant}`, at);
        rateLimit = takeToken(limits.rateLimit, counters.bucket.guess, request.createdAt).state;
      }
      this.#seqs.set(request.id, { seq: counters.seq });
      const { position, usage } = await this.#positionOfNewest(request);
      return {
        kind: "created",
        request,
        ...(position !== undefined ? { position } : {}),
        usage,
        ...(rateLimit ? { rateLimit } : {}),
      };
    } catch (error) {
      const reasons = cancellationReasons(error);
      if (!reasons) throw error;
      const [idemReason, requestReason, counterReason] = idempotency
        ? reasons
        : [undefined, ...reasons];
      // The key decides first: a replay is answered even when the queue is full, and it
      // takes no token (the transaction that would have taken it did not apply).
      if (idempotency && failed(idemReason)) {
        const held = await this.#heldKey(request.tenant, idempotency, idemReason?.Item);
        if (held.kind !== "replayed" || !limits.rateLimit) return held;
        const figures = tenantFigures(await this.#countersItem(request.queue)).get(request.tenant);
        return {
          ...held,
          rateLimit: peekBucket(limits.rateLimit, figures?.bucketAt ?? null, request.createdAt),
        };
      }
      if (failed(requestReason)) {
        throw new Error(`submit of ${request.id}: a request with this id already exists`);
      }
      if (failed(counterReason)) {
        const refusal = this.#submitRefusal(request, limits, counterReason?.Item);
        if (refusal === "bucket-missed") return { kind: "bucket-missed" };
        if (refusal) throw refusal;
        // The condition failed on a state the returned item does not show: read again.
        throw new TransientConflict("counters moved");
      }
      throwIfTransient(reasons, error);
      throw error;
    }
  }

  /** Answers a submit whose idempotency key is already held: replay, conflict, or orphan. */
  async #heldKey(
    tenant: string,
    idempotency: IdempotencyClaim,
    returned: Reason["Item"],
  ): Promise<SubmitOutcome | { kind: "orphan-key"; requestId: string }> {
    let requestId = returned?.requestId?.S;
    let bodyHash = returned?.bodyHash?.S;
    if (requestId === undefined || bodyHash === undefined) {
      // An endpoint that does not return the old item: read it (it can only be deleted
      // after its request is, so a consistent read finds it).
      const held = await this.#doc.send(
        new GetCommand({
          TableName: this.#table,
          Key: {
            ...idemKey(tenant, idempotency.key),
          },
          ConsistentRead: true,
        }),
      );
      requestId = held.Item?.requestId as string | undefined;
      bodyHash = held.Item?.bodyHash as string | undefined;
      if (requestId === undefined || bodyHash === undefined)
        throw new TransientConflict("key moved");
    }
    const existing = await this.get(requestId);
    // TTL deletes the request and its key independently; a key that outlived its request is
    // free again, as on SQLite where the key goes with its row.
    if (!existing) return { kind: "orphan-key", requestId };
    if (bodyHash !== idempotency.bodyHash) {
      throw new IdempotencyConflictError(idempotency.key, requestId);
    }
    return { kind: "replayed", request: existing };
  }

  async #releaseOrphanKey(tenant: string, key: string, requestId: string): Promise<void> {
    try {
      await this.#doc.send(
        new DeleteCommand({
          TableName: this.#table,
          Key: idemKey(tenant, key),
          ConditionExpression: "#requestId = :rid",
          ExpressionAttributeNames: { "#requestId": "requestId" },
          ExpressionAttributeValues: { ":rid": requestId },
        }),
      );
    } catch (error) {
      // Someone else released it (and maybe claimed it anew): the next pass sees that.
      if (!isConditionalCheckFailed(error)) throw error;
    }
  }

  // ---------------------------------------------------------------- reads

  async get(id: string): Promise<RequestRecord | null> {
    const item = await this.#getItem(id);
    return item ? fromItem(item) : null;
  }

  async #getItem(id: string): Promise<RequestItem | null> {
    const out = await this.#doc.send(
      new GetCommand({ TableName: this.#table, Key: requestKey(id), ConsistentRead: true }),
    );
    const item = (out.Item as RequestItem | undefined) ?? null;
    if (item) this.#memo.set(id, item);
    else this.#memo.delete(id);
    if (typeof item?.seq === "number") this.#seqs.set(id, { seq: item.seq });
    return item;
  }

  async queueCounts(queue: string): Promise<QueueCounts> {
    const counters = await this.#countersItem(queue);
    return {
      queued: (counters?.queued as number | undefined) ?? 0,
      running: (counters?.running as number | undefined) ?? 0,
    };
  }

  async list(query: ListQuery): Promise<ListPage> {
    const { limit } = query;
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new InvalidRequestError("limit must be a positive integer", "limit");
    }
    const after = query.cursor === undefined ? null : decodeListCursor(query.cursor);
    const statuses = [...new Set(query.statuses ?? [])];
    let items: Record<string, unknown>[];
    if (statuses.length === 0) {
      items = await this.#listPartition(
        INDEXES.list.name,
        INDEXES.list.partitionKey,
        listPk(query.tenant, query.queue),
        after,
        limit + 1,
      );
    } else {
      // One query per status (each a partition of listByStatus), merged newest first: the
      // cost is statuses × (limit + 1) items, whatever the table holds.
      const perStatus = await Promise.all(
        statuses.map((status) =>
          this.#listPartition(
            INDEXES.listByStatus.name,
            INDEXES.listByStatus.partitionKey,
            statusPk(query.tenant, query.queue, status),
            after,
            limit + 1,
          ),
        ),
      );
      const sk = INDEXES.list.sortKey;
      items = perStatus
        .flat()
        .sort((a, b) => ((a[sk] as string) < (b[sk] as string) ? 1 : -1))
        .slice(0, limit + 1);
    }
    const more = items.length > limit;
    // A page's positions (store.positions) follow from the items' places in their sequences.
    for (const item of items) {
      if (typeof item.seq === "number") this.#seqs.set(item.id as string, { seq: item.seq });
    }
    const page = items.slice(0, limit).map(fromItem);
    const last = page.at(-1);
    return { items: page, nextCursor: more && last ? encodeListCursor(last) : null };
  }

  /** Up to `want` items of one list partition, newest first, strictly after the cursor. */
  async #listPartition(
    index: string,
    partitionAttribute: string,
    partition: string,
    after: { createdAt: number; id: string } | null,
    want: number,
  ): Promise<Record<string, unknown>[]> {
    const expr = new Expression();
    let condition = `${expr.name(partitionAttribute)} = ${expr.value(partition)}`;
    if (after) {
      condition += ` AND ${expr.name(INDEXES.list.sortKey)} < ${expr.value(listSk(after.createdAt, after.id))}`;
    }
    return this.#queryItems(
      {
        TableName: this.#table,
        IndexName: index,
        KeyConditionExpression: condition,
        ScanIndexForward: false,
        ...expr.params(),
      },
      want,
    );
  }

  /**
   * The pages of one Query, following LastEvaluatedKey to the end of the range; `pageSize`
   * (asked before each page) sets its Limit. A caller that has enough stops iterating.
   */
  async *#pages(
    input: QueryCommandInput,
    pageSize?: () => number,
  ): AsyncGenerator<Record<string, unknown>[]> {
    let start: Record<string, unknown> | undefined;
    do {
      const page = await this.#doc.send(
        new QueryCommand({
          ...input,
          ...(pageSize ? { Limit: pageSize() } : {}),
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      yield page.Items ?? [];
      start = page.LastEvaluatedKey;
    } while (start);
  }

  /** Follows LastEvaluatedKey until `want` items are read or the range ends. */
  async #queryItems(input: QueryCommandInput, want: number): Promise<Record<string, unknown>[]> {
    const out: Record<string, unknown>[] = [];
    for await (const items of this.#pages(input, () => want - out.length)) {
      out.push(...items);
      if (out.length >= want) break;
    }
    return out;
  }

  /**
   * The fair position (store-support.ts fairPositionPlan), docs/design.md "Positions in
   * O(1)": higher priorities and every waiting tenant's level from the counters item (one
   * consistent read); the request's rank among its tenant's requests at its priority from
   * its `seq` and the counters (the index up to it only for an item without one); for each
   * other tenant, at most one pointer read: the request that would start at this request's
   * level, to compare ages. No read follows the depth.
   */
  async position(request: RequestRecord): Promise<number> {
    const counters = new Map([[request.queue, await this.#countersItem(request.queue)]]);
    return (await this.#fairPositions([request], counters)).get(request.id) ?? 0;
  }

  /** Positions of several QUEUED requests (a list page): one counters read per queue. */
  async positions(requests: readonly RequestRecord[]): Promise<Map<string, number>> {
    const counters = new Map<string, Record<string, unknown> | undefined>();
    for (const queue of new Set(requests.map((r) => r.queue))) {
      counters.set(queue, await this.#countersItem(queue));
    }
    return this.#fairPositions(requests, counters);
  }

  /**
   * Fair positions of `requests` from their queues' counters items: every probe of every
   * request is one pointer, all read in one BatchGetItem (100 keys a call), so a list page
   * costs its counters reads plus at most one pointer per item and other waiting tenant.
   */
  async #fairPositions(
    requests: readonly RequestRecord[],
    countersOf: ReadonlyMap<string, Record<string, unknown> | undefined>,
  ): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const planned: { request: RequestRecord; plan: ReturnType<typeof fairPositionPlan> }[] = [];
    for (const request of requests) {
      const { queue, priority, tenant } = request;
      const counters = countersOf.get(queue);
      const split = queuedByPriority(counters);
      // Without a usable split (a counters item from before it), the tenant's own entries
      // of every priority before it: exact while one tenant waits, a lower bound otherwise.
      if (!split) {
        out.set(request.id, await this.#countReadyBefore(request, null));
        continue;
      }
      const seq = this.#seqs.get(request.id)?.seq;
      const stream = seq === undefined ? null : streamOf(counters, tenant, priority);
      const own =
        (stream && seq !== undefined ? rankInStream(stream, seq) : null) ??
        (await this.#countReadyBefore(request, priority));
      const higher = split.slice(priority + 1).reduce((a, b) => a + b, 0);
      const tenants: FairTenant[] = [];
      for (const [name, f] of tenantFigures(counters)) {
        const queued = f.byPriority[priority] ?? 0;
        if (queued <= 0) continue;
        const above = f.byPriority.slice(priority + 1).reduce((a, b) => a + b, 0);
        tenants.push({ tenant: name, level: f.running + above, queued });
      }
      planned.push({ request, plan: fairPositionPlan({ tenant, higher, own, tenants }) });
    }
    // Each probe names a tenant's index-th request at the priority; its place in that
    // tenant's sequence follows from the counters, and the place's pointer gives its age.
    const probeKey = (r: RequestRecord, tenant: string, index: number) =>
      `${streamKey(r.queue, tenant, r.priority)}\u0000${index}`;
    const places = new Map<string, Record<string, string> | null>();
    for (const { request, plan } of planned) {
      for (const probe of plan.probes) {
        const key = probeKey(request, probe.tenant, probe.index);
        if (places.has(key)) continue;
        const stream = streamOf(countersOf.get(request.queue), probe.tenant, request.priority);
        const place = stream ? placeInStream(stream, probe.index) : null;
        places.set(
          key,
          place === null
            ? null
            : seqPointerKey(request.queue, probe.tenant, request.priority, place),
        );
      }
    }
    const pointerKeys = [...places.values()].filter((k): k is Record<string, string> => !!k);
    const found = new Map(
      (await this.#batchGet(pointerKeys, ["readyKey"], false)).map((item) => [
        item[TABLE_KEY.partitionKey] as string,
        item.readyKey as string,
      ]),
    );
    const keys = new Map<string, string | null>();
    for (const { request, plan } of planned) {
      const probeKeys = new Map<string, string | null>();
      for (const probe of plan.probes) {
        const key = probeKey(request, probe.tenant, probe.index);
        let ready = keys.get(key);
        if (ready === undefined) {
          const pointer = places.get(key);
          // No place (a sequence from before sequences existed) or no pointer (not yet
          // visible, or expired): read the tenant's index up to that request.
          ready =
            (pointer ? found.get(pointer[TABLE_KEY.partitionKey] as string) : undefined) ??
            (await this.#readyNth(request.queue, probe.tenant, request.priority, probe.index));
          keys.set(key, ready);
        }
        probeKeys.set(probe.tenant, ready);
      }
      out.set(request.id, fairPositionFinish(request, plan, probeKeys));
    }
    return out;
  }

  /**
   * Position of a request just submitted when the counters alone give it: no other tenant
   * waits at its priority, so every QUEUED request of a higher priority and every other one
   * of its own start before it (it is the newest). One read of the counters; undefined
   * otherwise (the caller asks position()).
   */
  async #positionOfNewest(
    request: RequestRecord,
  ): Promise<{ position: number | undefined; usage: UsageFigures }> {
    const counters = await this.#countersItem(request.queue);
    const stream = streamOf(counters, request.tenant, request.priority);
    this.#learnStream(request, stream, null);
    const usage = usageOf(counters, request.tenant, request.createdAt);
    const split = queuedByPriority(counters);
    if (!split) return { position: undefined, usage };
    for (const [tenant, f] of tenantFigures(counters)) {
      if (tenant !== request.tenant && (f.byPriority[request.priority] ?? 0) > 0) {
        // Other tenants wait at its priority: the fair position from this same counters
        // item when the sequence ranks it (no second read), else position() counts it.
        const seq = this.#seqs.get(request.id)?.seq;
        if (!stream || seq === undefined || rankInStream(stream, seq) === null) {
          return { position: undefined, usage };
        }
        const fair = await this.#fairPositions([request], new Map([[request.queue, counters]]));
        return { position: fair.get(request.id), usage };
      }
    }
    const atOrAbove = split.slice(request.priority).reduce((a, b) => a + b, 0);
    return { position: Math.max(0, atOrAbove - 1), usage };
  }

  async #countersItem(queue: string): Promise<Record<string, unknown> | undefined> {
    const out = await this.#doc.send(
      new GetCommand({ TableName: this.#table, Key: countersKey(queue), ConsistentRead: true }),
    );
    return out.Item;
  }

  /**
   * Entries of the tenant's ready partition that sort before `request`: those of `priority`
   * only, or all of them (`priority` null).
   */
  async #countReadyBefore(request: RequestRecord, priority: number | null): Promise<number> {
    const own = readyOrderKey(request);
    const from = priority === null ? null : `${9 - priority}#`;
    const keys = await this.#readyKeys(request.queue, request.tenant, from, own);
    return keys.filter((key) => key < own).length;
  }

  /** The `index`-th (0-based) ready key of a tenant at a priority; null when there is none. */
  async #readyNth(
    queue: string,
    tenant: string,
    priority: number,
    index: number,
  ): Promise<string | null> {
    const expr = new Expression();
    const sk = expr.name(INDEXES.ready.sortKey);
    const items = await this.#queryItems(
      {
        TableName: this.#table,
        IndexName: INDEXES.ready.name,
        KeyConditionExpression: `${expr.name(INDEXES.ready.partitionKey)} = ${expr.value(readyPk(queue, tenant))} AND begins_with(${sk}, ${expr.value(`${9 - priority}#`)})`,
        ProjectionExpression: sk,
        ...expr.params(),
      },
      index + 1,
    );
    return (items[index]?.[INDEXES.ready.sortKey] as string | undefined) ?? null;
  }

  /**
   * Sort keys of a tenant's ready partition from `from` to `to` (both included; `from` null:
   * from the start, `to` excluded), in order. Keys are read, not counted: a key condition
   * cannot bound a range on both sides with one end open.
   */
  async #readyKeys(
    queue: string,
    tenant: string,
    from: string | null,
    to: string,
  ): Promise<string[]> {
    const expr = new Expression();
    const sk = expr.name(INDEXES.ready.sortKey);
    const range =
      from === null
        ? `${sk} < ${expr.value(to)}`
        : `${sk} BETWEEN ${expr.value(from)} AND ${expr.value(to)}`;
    const condition = `${expr.name(INDEXES.ready.partitionKey)} = ${expr.value(readyPk(queue, tenant))} AND ${range}`;
    const keys: string[] = [];
    const pages = this.#pages({
      TableName: this.#table,
      IndexName: INDEXES.ready.name,
      KeyConditionExpression: condition,
      ProjectionExpression: sk,
      ...expr.params(),
    });
    for await (const items of pages) {
      for (const entry of items) keys.push(entry[INDEXES.ready.sortKey] as string);
    }
    return keys;
  }

  /** Queue and tenant counts and the run summary from one read of the counters item. */
  async usage(queue: string, tenant: string, now: number): Promise<UsageFigures> {
    return usageOf(await this.#countersItem(queue), tenant, now);
  }

  /** The run-time summary of today and yesterday from the counters item. */
  async runStats(queue: string, now: number): Promise<RunStats | null> {
    return runStatsOf(await this.#countersItem(queue), now);
  }

  async tenantCounts(queue: string, tenant: string): Promise<QueueCounts> {
    const f = tenantFigures(await this.#countersItem(queue)).get(tenant);
    return { queued: f?.queued ?? 0, running: f?.running ?? 0 };
  }

  async findActive(limit: number): Promise<RequestRecord[]> {
    // DynamoDB refuses Limit 0.
    if (limit < 1) return [];
    const found: RequestRecord[] = [];
    for (const queue of [...new Set(this.#queues())].sort()) {
      if (found.length >= limit) break;
      const records = await this.#sweepPartition(
        sweepActivePk(queue),
        null,
        limit - found.length,
        (r) => ACTIVE_STATUSES.includes(r.status),
      );
      found.push(...records);
    }
    return found.slice(0, limit);
  }

  async findExpired(now: number, limit: number): Promise<RequestRecord[]> {
    if (limit < 1) return [];
    const perQueue = await Promise.all(
      [...new Set(this.#queues())].map((queue) =>
        this.#sweepPartition(
          sweepQueuedPk(queue),
          // Every key of an instant ≤ now sorts below the padded now + 1.
          pad(now + 1),
          limit,
          (r) => r.status === RequestStatus.QUEUED && r.expiresAt <= now,
        ),
      ),
    );
    return perQueue
      .flat()
      .sort((a, b) => a.expiresAt - b.expiresAt)
      .slice(0, limit);
  }

  /**
   * Up to `want` requests of one sweep partition (optionally below `below`), read back with
   * consistent reads: the index is KEYS_ONLY and, on AWS, eventually consistent, so each
   * entry is confirmed against its item by `keep`.
   */
  async #sweepPartition(
    partition: string,
    below: string | null,
    want: number,
    keep: (r: RequestRecord) => boolean,
  ): Promise<RequestRecord[]> {
    const found: RequestRecord[] = [];
    const items = this.#sweepItems(partition, {
      below,
      pageSize: () => Math.min(want - found.length, BATCH_GET_MAX),
    });
    for await (const item of items) {
      const record = fromItem(item);
      if (keep(record)) found.push(record);
      if (found.length >= want) break;
    }
    return found;
  }

  /** Consistent reads of up to 100 keys at a time, in the order given; missing items skipped. */
  async #batchGet(
    keys: Record<string, string>[],
    projection?: readonly string[],
    consistent = true,
  ): Promise<Record<string, unknown>[]> {
    const byPk = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < keys.length; i += BATCH_GET_MAX) {
      let pending: Record<string, unknown>[] = keys.slice(i, i + BATCH_GET_MAX);
      for (let round = 0; pending.length > 0; round++) {
        if (round > 0) await sleep(Math.min(1000, 20 * 2 ** round));
        const expr = new Expression();
        const projectionExpression = projection
          ? [TABLE_KEY.partitionKey, ...projection].map((a) => expr.name(a)).join(", ")
          : undefined;
        const out = await this.#doc.send(
          new BatchGetCommand({
            RequestItems: {
              [this.#table]: {
                Keys: pending,
                ConsistentRead: consistent,
                ...(projectionExpression
                  ? { ProjectionExpression: projectionExpression, ...expr.params() }
                  : {}),
              },
            },
          }),
        );
        for (const item of out.Responses?.[this.#table] ?? []) {
          byPk.set(item[TABLE_KEY.partitionKey] as string, item);
        }
        // Throttled keys come back unprocessed and must be asked for again.
        pending = out.UnprocessedKeys?.[this.#table]?.Keys ?? [];
      }
    }
    return keys.flatMap((k) => {
      const item = byPk.get(k[TABLE_KEY.partitionKey] as string);
      return item ? [item] : [];
    });
  }

  // ---------------------------------------------------------------- claim

  /**
   * The fair claim (docs/design.md "Fair claim on DynamoDB"): from the counters item, pick
   * the tenant by the SPEC §3 rule (its per-tenant figures give priorities and active
   * counts, its head hints break ties), learn that tenant's head (the hinted request itself
   * when it is the tenant's only one, else the tenant's ready partition), and start it in
   * one transaction that also checks the queue's and the tenant's running counts and moves
   * the tenant's hint on. Calls per claim grow neither with the queue's depth nor with the
   * number of waiting tenants; a stale hint costs one read more.
   *
   * With a `pass`, the counters item is read at the pass's first claim only and then moved
   * by the pass's own claims, and the ready keys read stay for its later claims. The
   * writes' conditions keep every limit whatever the snapshot says; a stale snapshot can
   * only end the pass early ("empty", "full", "held") or miss a change made meanwhile, and
   * the write that made that change wakes the queue again (sqs-trigger.ts).
   */
  async claimNext(
    queue: string,
    limits: ClaimLimits,
    now: number,
    pass?: ClaimPass,
  ): Promise<ClaimResult> {
    const limitOf = limits.maxRunningOf ?? (() => limits.maxRunning);
    const state = this.#passState(queue, pass);
    // Tenants whose partition showed nothing to claim in this call (the index lags on AWS).
    const drained = new Set<string>();
    // Each round that fails lost its candidates to other dispatchers, which made progress;
    // a fair claim may meet them on every tenant it picks, so it has more rounds.
    for (let round = 0; round < CLAIM_ROUNDS * 4; round++) {
      // The counters move in the same transaction as every request, so `queued` 0 means no
      // request is QUEUED; the claim's own counter condition is what enforces the limits.
      // A round after one that lost a race reads them afresh.
      if (state.counters === null || round > 0 || this.#now() - state.readAt > PASS_VIEW_MS) {
        state.readAt = this.#now();
        state.counters = (await this.#countersItem(queue)) ?? {};
        state.ready.clear();
      }
      const counters = state.counters;
      if (((counters.running as number | undefined) ?? 0) >= limits.maxRunning) {
        return { kind: "full" };
      }
      if (((counters.queued as number | undefined) ?? 0) <= 0) return { kind: "empty" };
      const waiting = [...tenantFigures(counters)].filter(
        ([tenant, f]) => f.queued > 0 && !drained.has(tenant),
      );
      const open = waiting
        .filter(([tenant, f]) => f.running < limitOf(tenant))
        .map(([tenant, figures]) => ({
          tenant,
          figures,
          priority: topPriority(figures),
          active: figures.running,
        }));
      if (open.length === 0) return waiting.length > 0 ? { kind: "held" } : { kind: "empty" };
      const top = Math.max(...open.map((t) => t.priority));
      const atTop = open.filter((t) => t.priority === top);
      const fewest = Math.min(...atTop.map((t) => t.active));
      const tied = atTop.filter((t) => t.active === fewest);
      const picked = await this.#pickTenant(queue, tied, top, state, drained, round);
      if (!picked) continue;
      const result = await this.#claimHead(
        queue,
        picked,
        state,
        limits.maxRunning,
        limitOf(picked.tenant),
        now,
      );
      if (result === "drained") drained.add(picked.tenant);
      else if (result !== "retry") return result;
    }
    throw new ConcurrentUpdateError(
      `queue ${JSON.stringify(queue)}: every candidate was taken by others; try again`,
    );
  }

  /** What a pass (or, without one, this claim alone) knows of `queue`. */
  #passState(queue: string, pass: ClaimPass | undefined): PassState {
    const fresh: PassState = { counters: null, readAt: 0, ready: new Map() };
    if (!pass) return fresh;
    let byQueue = this.#passes.get(pass);
    if (!byQueue) {
      byQueue = new Map();
      this.#passes.set(pass, byQueue);
    }
    let state = byQueue.get(queue);
    if (!state) {
      state = fresh;
      byQueue.set(queue, state);
    }
    return state;
  }

  /**
   * Among tenants tied on priority and active count, the one with the oldest head, with
   * that head known for sure: read partition keys, or the hinted request read and found
   * QUEUED when it is the tenant's only one. Hints are compared first; the best one is
   * checked, and if it was stale the tenant's true head is read and the choice made again,
   * so a stale hint costs a read, never a wrong pick (docs/design.md). Null when every
   * tied tenant's partition showed nothing.
   */
  async #pickTenant(
    queue: string,
    tied: readonly ClaimCandidate[],
    top: number,
    state: PassState,
    drained: Set<string>,
    round: number,
  ): Promise<PickedTenant | null> {
    const checked = new Map<string, RequestItem>();
    // Each step reads one tenant's head (or, once, every unknown one): it ends.
    for (let step = 0; step < 2 * tied.length + 2; step++) {
      const live = tied.filter((t) => !drained.has(t.tenant));
      if (live.length === 0) return null;
      const heads = live.map((t) => ({ t, head: knownHead(t, top, state, checked) }));
      const unknown = heads.filter((h) => h.head === null);
      if (live.length > 1 && unknown.length > 0) {
        // No usable hint (a hint at another priority, or none): read those partitions.
        await Promise.all(
          unknown.map((h) => this.#loadReady(queue, h.t.tenant, state, drained, round)),
        );
        continue;
      }
      let best = heads[0] as (typeof heads)[number];
      for (const h of heads) {
        if (h.head && best.head && h.head.key < best.head.key) best = h;
      }
      if (best.head?.sure) {
        return { ...best.t, item: checked.get(best.t.tenant) ?? null };
      }
      const hint = best.head?.key;
      if (hint !== undefined && best.t.figures.queued === 1) {
        // The tenant's only request: if the hinted one is still QUEUED, it is that one.
        const item = await this.#getItem(readyKeyId(hint));
        if (
          item?.status === RequestStatus.QUEUED &&
          item[INDEXES.ready.sortKey] === hint &&
          item[INDEXES.ready.partitionKey] === readyPk(queue, best.t.tenant)
        ) {
          checked.set(best.t.tenant, item);
          continue;
        }
      }
      await this.#loadReady(queue, best.t.tenant, state, drained, round);
    }
    return null;
  }

  /** Reads the first entries of a tenant's ready partition into the pass. */
  async #loadReady(
    queue: string,
    tenant: string,
    state: PassState,
    drained: Set<string>,
    round: number,
  ): Promise<void> {
    const keys = await this.#readyKeysFrom(queue, tenant, CLAIM_CANDIDATES * (round + 1));
    if (keys.length > 0) {
      state.ready.set(tenant, keys);
    } else {
      state.ready.delete(tenant);
      drained.add(tenant);
    }
  }

  /**
   * Starts the picked tenant's head, or the next of its read entries when another
   * dispatcher took it. "retry" when the round must start again from fresh counters (the
   * tenant reached its limit meanwhile, its hint moved, or every entry read was gone),
   * "drained" when its partition showed nothing.
   */
  async #claimHead(
    queue: string,
    picked: PickedTenant,
    state: PassState,
    maxRunning: number,
    tenantMaxRunning: number,
    now: number,
  ): Promise<ClaimResult | "retry" | "drained"> {
    const { tenant, figures } = picked;
    // After its last QUEUED request, a tenant has no head: the hint goes (on condition).
    const last = figures.queued <= 1;
    if (picked.item) {
      // Taken by another dispatcher meanwhile: pick again from fresh counters.
      const result = await this.#claimOne(picked.item.id, picked.item, queue, state, {
        maxRunning,
        tenantMaxRunning,
        now,
        nextHead: last ? null : undefined,
      });
      return result ?? "retry";
    }
    const keys = state.ready.get(tenant);
    if (!keys || keys.length === 0) return "drained";
    while (keys.length > 0) {
      const key = keys.shift() as string;
      if (keys.length === 0) state.ready.delete(tenant);
      // The entry after it is the tenant's next head; with none read, the hint stays as it
      // is (it names this request or an older one: still no later than the true head).
      const nextHead = keys[0] ?? (last ? null : undefined);
      const result = await this.#claimOne(readyKeyId(key), null, queue, state, {
        maxRunning,
        tenantMaxRunning,
        now,
        nextHead,
      });
      // null: the entry was no longer QUEUED (another dispatcher, a cancel, a stale index
      // entry); the next one in order is the head now.
      if (result !== null) return result;
    }
    return "retry";
  }

  /**
   * Claims one request (read unless `item` is given), reading it again while it changed
   * between the read and the write; null when it is not QUEUED any more. A claim made moves
   * the pass's snapshot as the write moved the counters item.
   */
  async #claimOne(
    id: string,
    item: RequestItem | null,
    queue: string,
    state: PassState,
    claim: ClaimWrite,
  ): Promise<ClaimResult | "retry" | null> {
    let current = item;
    // "again": the candidate changed between our read and our write; read it once more
    // (no backoff: the change is done, nothing is contended).
    for (let reread = 0; reread < CONFLICT_ATTEMPTS; reread++) {
      if (!current) current = await this.#getItem(id);
      if (!current || current.status !== RequestStatus.QUEUED) return null;
      const read = current;
      const result = await this.#retrying(() => this.#claimCandidate(read, queue, claim));
      if (result === "again") {
        current = null;
        continue;
      }
      if (result === "tenant-full" || result === "hint-moved") return "retry";
      if (result.kind === "full") state.counters = null;
      if (result.kind === "started" || result.kind === "expired") {
        moveSnapshot(state, read, result.kind === "started", claim.nextHead);
      }
      return result;
    }
    return null;
  }

  /** The first `limit` sort keys of a tenant's ready partition (its start order). */
  async #readyKeysFrom(queue: string, tenant: string, limit: number): Promise<string[]> {
    const expr = new Expression();
    const out = await this.#doc.send(
      new QueryCommand({
        TableName: this.#table,
        IndexName: INDEXES.ready.name,
        KeyConditionExpression: `${expr.name(INDEXES.ready.partitionKey)} = ${expr.value(readyPk(queue, tenant))}`,
        Limit: limit,
        ...expr.params(),
      }),
    );
    return (out.Items ?? []).map((i) => i[INDEXES.ready.sortKey] as string);
  }

  /**
   * Starts or expires one QUEUED request as read; "again" when it changed after the read,
   * "hint-moved" when the tenant got a new request meanwhile and the hint must stay.
   */
  async #claimCandidate(
    item: RequestItem,
    queue: string,
    claim: ClaimWrite,
  ): Promise<ClaimResult | "again" | "tenant-full" | "hint-moved"> {
    const { id } = item;
    const { maxRunning, tenantMaxRunning, now, nextHead } = claim;
    // The write is conditioned on the `rev` read, so the record returned is exactly what
    // was written.
    const record = fromItem(item);
    if (item.expiresAt <= now) {
      const error = {
        code: "expired" as const,
        message: `waited longer than its queue TTL of ${item.queueTtlSeconds}s`,
      };
      const expired = await this.#finishQueued(item, now, error);
      return expired
        ? {
            kind: "expired",
            request: {
              ...record,
              status: RequestStatus.EXPIRED,
              finishedAt: now,
              updatedAt: now,
              error,
            },
          }
        : "again";
    }

    const expr = new Expression();
    const update = new UpdateClauses(expr)
      .set("status", RequestStatus.STARTING)
      .increment("attempt")
      .set("jobRef", null)
      .set("updatedAt", now)
      .set(INDEXES.listByStatus.partitionKey, statusPk(item.tenant, queue, RequestStatus.STARTING))
      .set(INDEXES.sweep.partitionKey, sweepActivePk(queue))
      .set(INDEXES.sweep.sortKey, sweepSk(item.createdAt, id))
      .increment("rev")
      .remove(INDEXES.ready.partitionKey, INDEXES.ready.sortKey);
    const condition = `${expr.name("status")} = ${expr.value(RequestStatus.QUEUED)} AND ${expr.name("rev")} = ${expr.value(item.rev)}`;
    // The tenant's head hint moves to the entry after this one; after its last request it
    // goes, only if no request of the tenant arrived meanwhile (`tq` still 1).
    let hintClause = "";
    let hintCondition = "";
    const hintValues: Record<string, unknown> = {};
    if (typeof nextHead === "string") {
      hintClause = " SET #th = :next";
      hintValues[":next"] = nextHead;
    } else if (nextHead === null) {
      hintClause = " REMOVE #th";
      hintCondition = " AND #tq = :one";
    }
    // A request placed late in its tenant's sequence (see Stream) leaves out of place order:
    // its place is recorded and the stream's late count drops, as when it is cancelled.
    const lateClaim = item.seqLate === true && typeof item.seq === "number";
    try {
      await this.#doc.send(
        new TransactWriteCommand({
          TransactItems: [
            {
              Update: {
                TableName: this.#table,
                Key: requestKey(id),
                UpdateExpression: update.toString(),
                ConditionExpression: condition,
                ...expr.params(),
              },
            },
            {
              Update: {
                TableName: this.#table,
                Key: countersKey(queue),
                UpdateExpression: `ADD #queued :minus, #running :one, #qp :minus, #tq :minus, #tqp :minus, #tr :one${lateClaim ? ", #tc :gap, #tx :minus" : ""}${hintClause}`,
                ConditionExpression: `(attribute_not_exists(#running) OR #running < :max) AND (attribute_not_exists(#tr) OR #tr < :tmax)${hintCondition}`,
                ExpressionAttributeNames: {
                  "#queued": "queued",
                  "#running": "running",
                  "#qp": queuedAt(item.priority),
                  "#tq": tenantAttr("q", item.tenant),
                  "#tqp": tenantAttr(`q${item.priority}`, item.tenant),
                  "#tr": tenantAttr("r", item.tenant),
                  ...(hintClause ? { "#th": tenantAttr("h", item.tenant) } : {}),
                  ...(lateClaim
                    ? {
                        "#tc": tenantAttr(`c${item.priority}`, item.tenant),
                        "#tx": tenantAttr(`x${item.priority}`, item.tenant),
                      }
                    : {}),
                },
                ExpressionAttributeValues: {
                  ":minus": -1,
                  ":one": 1,
                  ":max": maxRunning,
                  ":tmax": tenantMaxRunning,
                  ...hintValues,
                  ...(lateClaim ? { ":gap": new Set([item.seq]) } : {}),
                },
                // Says which condition stopped the claim: the queue's limit (full), the
                // tenant's, or the hint's.
                ReturnValuesOnConditionCheckFailure: "ALL_OLD",
              },
            },
          ],
        }),
      );
    } catch (error) {
      const reasons = cancellationReasons(error);
      if (!reasons) throw error;
      // Full wins: whatever happened to the candidate, there is no slot to give.
      if (failed(reasons[1])) {
        const old = reasons[1]?.Item;
        if ((rawNumber(old, "running") ?? 0) >= maxRunning) return { kind: "full" };
        if ((rawNumber(old, tenantAttr("r", item.tenant)) ?? 0) >= tenantMaxRunning) {
          return "tenant-full";
        }
        return "hint-moved";
      }
      // Changed since our read: taken (the re-read says so) or only updated (retry it).
      if (failed(reasons[0])) return "again";
      throwIfTransient(reasons, error);
      throw error;
    }
    return {
      kind: "started",
      request: {
        ...record,
        status: RequestStatus.STARTING,
        attempt: record.attempt + 1,
        jobRef: null,
        updatedAt: now,
      },
    };
  }

  /** QUEUED → EXPIRED with `queued − 1`; false when the request changed since `item` was read. */
  async #finishQueued(
    item: RequestItem,
    now: number,
    error: { code: "expired"; message: string },
  ): Promise<boolean> {
    const expr = new Expression();
    const ttl = this.#ttlFor(item.queue, now);
    const update = new UpdateClauses(expr)
      .set("status", RequestStatus.EXPIRED)
      .set("finishedAt", now)
      .set("updatedAt", now)
      .set("error", error)
      .set(
        INDEXES.listByStatus.partitionKey,
        statusPk(item.tenant, item.queue, RequestStatus.EXPIRED),
      )
      .set(TTL_ATTRIBUTE, ttl)
      .increment("rev")
      .remove(
        INDEXES.ready.partitionKey,
        INDEXES.ready.sortKey,
        INDEXES.sweep.partitionKey,
        INDEXES.sweep.sortKey,
      );
    const condition = `${expr.name("status")} = ${expr.value(RequestStatus.QUEUED)} AND ${expr.name("rev")} = ${expr.value(item.rev)}`;
    const outcome = await this.#finishTransaction(
      item,
      {
        TableName: this.#table,
        Key: requestKey(item.id),
        UpdateExpression: update.toString(),
        ConditionExpression: condition,
        ...expr.params(),
      },
      { queued: -1, running: 0 },
      ttl,
    );
    return outcome === "applied";
  }

  // ---------------------------------------------------------------- transition

  /**
   * Applies one conditional transition.
   *
   * A field update (status unchanged) is one UpdateItem with `ReturnValues: ALL_NEW`, no read.
   * A status change first reads the item (consistently) for what the keys need and never
   * changes: tenant and queue (statusPk, the counter item), createdAt (sweepSk); the write's
   * own condition re-checks status, attempt and cancelRequested. With a zero counter delta it
   * is one UpdateItem (ALL_NEW); otherwise one TransactWriteItems (request + counters, and the
   * idempotency key's TTL when the request ends), after which a consistent GetItem returns
   * the item: transactions return no values. That read may already show a later write.
   */
  async transition(cmd: TransitionCommand): Promise<RequestRecord | null> {
    assertTransitionCommand(cmd);
    const changesStatus = cmd.to !== undefined && cmd.from.some((s) => s !== cmd.to);
    if (!changesStatus) return this.#retrying(() => this.#updateFields(cmd));
    return this.#retrying(() => this.#changeStatus(cmd, cmd.to as RequestStatus));
  }

  /** Condition of a transition: the item exists and matches status, attempt and cancel flag. */
  #transitionCondition(expr: Expression, cmd: TransitionCommand): string {
    const parts = [
      `attribute_exists(${expr.name(TABLE_KEY.partitionKey)})`,
      `${expr.name("status")} IN (${cmd.from.map((s) => expr.value(s)).join(", ")})`,
    ];
    if (cmd.attempt !== undefined) {
      parts.push(`${expr.name("attempt")} = ${expr.value(cmd.attempt)}`);
    }
    if (cmd.cancelRequested !== undefined) {
      parts.push(`${expr.name("cancelRequested")} = ${expr.value(cmd.cancelRequested)}`);
    }
    return parts.join(" AND ");
  }

  #patchClauses(expr: Expression, patch: RequestPatch | undefined): UpdateClauses {
    const update = new UpdateClauses(expr).increment("rev");
    for (const field of PATCH_FIELDS) {
      const value = patch?.[field];
      if (value !== undefined) update.set(field, plain(value));
    }
    return update;
  }

  async #updateFields(cmd: TransitionCommand): Promise<RequestRecord | null> {
    const expr = new Expression();
    const update = this.#patchClauses(expr, cmd.set);
    const condition = this.#transitionCondition(expr, cmd);
    return this.#singleUpdate({
      TableName: this.#table,
      Key: requestKey(cmd.id),
      UpdateExpression: update.toString(),
      ConditionExpression: condition,
      ...expr.params(),
    });
  }

  async #singleUpdate(input: ItemUpdate): Promise<RequestRecord | null> {
    try {
      const out = await this.#doc.send(new UpdateCommand({ ...input, ReturnValues: "ALL_NEW" }));
      if (!out.Attributes) return null;
      const item = out.Attributes as RequestItem;
      this.#memo.set(item.id, item);
      return fromItem(item);
    } catch (error) {
      if (isConditionalCheckFailed(error)) return null;
      if (isTransientWriteError(error))
        throw new TransientConflict("write conflict", { cause: error });
      throw error;
    }
  }

  async #changeStatus(cmd: TransitionCommand, to: RequestStatus): Promise<RequestRecord | null> {
    // What this instance last saw of the item gives the attributes the keys need (they
    // never change) and the `rev` to condition a transaction on; a consistent read is only
    // made when nothing is remembered, when the memory says the condition fails (it may be
    // stale) or when the transaction found the item changed.
    let item: RequestItem | null = this.#memo.get(cmd.id) ?? null;
    let fresh = false;
    for (let tries = 0; tries < CONFLICT_ATTEMPTS; tries++) {
      if (!item || (!fresh && !conditionHolds(item, cmd))) {
        item = await this.#getItem(cmd.id);
        fresh = true;
      }
      // A consistent read that already fails the condition is a linearizable "did not hold".
      if (!item || !conditionHolds(item, cmd)) return null;
      const { tenant, queue } = item;
      const expr = new Expression();
      const update = this.#patchClauses(expr, cmd.set)
        .set("status", to)
        .set(INDEXES.listByStatus.partitionKey, statusPk(tenant, queue, to));
      // Only QUEUED → QUEUED keeps the ready keys, and that is not a status change.
      update.remove(INDEXES.ready.partitionKey, INDEXES.ready.sortKey);
      let ttl: number | null = null;
      if (statusClass(to) === "active") {
        update
          .set(INDEXES.sweep.partitionKey, sweepActivePk(queue))
          .set(INDEXES.sweep.sortKey, sweepSk(item.createdAt, item.id));
      } else {
        const finishedAt = cmd.set?.finishedAt ?? item.finishedAt ?? this.#now();
        ttl = this.#ttlFor(queue, finishedAt);
        update.set(TTL_ATTRIBUTE, ttl).remove(INDEXES.sweep.partitionKey, INDEXES.sweep.sortKey);
      }
      const delta = counterDelta(cmd.from[0] as RequestStatus, to);
      if (delta.queued === 0 && delta.running === 0) {
        // One UpdateItem: its own condition decides, and ALL_NEW returns the truth.
        return this.#singleUpdate({
          TableName: this.#table,
          Key: requestKey(cmd.id),
          UpdateExpression: update.toString(),
          ConditionExpression: this.#transitionCondition(expr, cmd),
          ...expr.params(),
        });
      }
      // A transaction returns no values. Conditioned on the `rev` of `item` as well, its
      // success means the item was exactly `item` before: the result is computed, not read.
      const condition = `${this.#transitionCondition(expr, cmd)} AND ${expr.name("rev")} = ${expr.value(item.rev)}`;
      const outcome = await this.#finishTransaction(
        item,
        {
          TableName: this.#table,
          Key: requestKey(cmd.id),
          UpdateExpression: update.toString(),
          ConditionExpression: condition,
          ...expr.params(),
        },
        delta,
        ttl,
        delta.running < 0 ? runTime(item, cmd) : null,
      );
      if (outcome === "applied") {
        const written = applyTransition(item, cmd, to);
        this.#memo.set(cmd.id, written);
        return fromItem(written);
      }
      // Changed since `item` was read: read it again and decide again.
      this.#memo.delete(cmd.id);
      item = null;
    }
    throw new TransientConflict(`request ${cmd.id} kept changing while being written`);
  }

  /**
   * One transaction: the request update, the counter delta and, when the request ends with
   * an idempotency key, that key's TTL (so the key lives exactly as long as its request).
   */
  async #finishTransaction(
    item: RequestItem,
    requestUpdate: ItemUpdate,
    delta: { queued: number; running: number },
    ttl: number | null,
    run: { day: number; ms: number } | null = null,
  ): Promise<"applied" | "changed"> {
    const withKey = ttl !== null && typeof item.idemPk === "string";
    const build = (includeKey: boolean): TransactWriteCommandInput => {
      const counterParts: string[] = [];
      const values: Record<string, unknown> = {};
      if (delta.queued !== 0) {
        counterParts.push("#queued :dq", "#qp :dq", "#tq :dq", "#tqp :dq");
        values[":dq"] = delta.queued;
      }
      if (delta.running !== 0) {
        counterParts.push("#running :dr", "#tr :dr");
        values[":dr"] = delta.running;
      }
      // The run-time summary: this day's sum and count; days that left the window go.
      const runNames: Record<string, string> = {};
      const removes: string[] = [];
      // A request leaving QUEUED here (not by a claim of its tenant's head) may leave a gap
      // in its sequence: its place is recorded, so the ranks behind it stay exact.
      const gap = delta.queued < 0 && typeof item.seq === "number";
      if (gap) {
        counterParts.push("#tc :gap");
        values[":gap"] = new Set([item.seq]);
        runNames["#tc"] = tenantAttr(`c${item.priority}`, item.tenant);
        if (item.seqLate === true) {
          counterParts.push("#tx :lateGone");
          values[":lateGone"] = -1;
          runNames["#tx"] = tenantAttr(`x${item.priority}`, item.tenant);
        }
      }
      if (run) {
        counterParts.push("#rs :ms", "#rn :rn");
        values[":ms"] = run.ms;
        values[":rn"] = 1;
        runNames["#rs"] = `rs#${run.day}`;
        runNames["#rn"] = `rn#${run.day}`;
        for (let back = 2; back <= RUN_DAYS_SWEPT; back++) {
          runNames[`#rs${back}`] = `rs#${run.day - back}`;
          runNames[`#rn${back}`] = `rn#${run.day - back}`;
          removes.push(`#rs${back}`, `#rn${back}`);
        }
      }
      const items: NonNullable<TransactWriteCommandInput["TransactItems"]> = [
        { Update: requestUpdate },
        {
          Update: {
            TableName: this.#table,
            Key: countersKey(item.queue),
            UpdateExpression: `ADD ${counterParts.join(", ")}${removes.length > 0 ? ` REMOVE ${removes.join(", ")}` : ""}`,
            ExpressionAttributeNames: {
              ...(delta.queued !== 0
                ? {
                    "#queued": "queued",
                    "#qp": queuedAt(item.priority),
                    "#tq": tenantAttr("q", item.tenant),
                    "#tqp": tenantAttr(`q${item.priority}`, item.tenant),
                  }
                : {}),
              ...(delta.running !== 0
                ? { "#running": "running", "#tr": tenantAttr("r", item.tenant) }
                : {}),
              ...runNames,
            },
            ExpressionAttributeValues: values,
          },
        },
      ];
      if (includeKey) {
        items.push({
          Update: {
            TableName: this.#table,
            // includeKey implies withKey, which checked that idemPk is a string.
            Key: idemKeyOfPk(item.idemPk as string),
            UpdateExpression: "SET #ttl = :ttl",
            // Never create or touch a key that is not this request's.
            ConditionExpression: "#requestId = :rid",
            ExpressionAttributeNames: { "#ttl": TTL_ATTRIBUTE, "#requestId": "requestId" },
            ExpressionAttributeValues: { ":ttl": ttl, ":rid": item.id },
          },
        });
      }
      return { TransactItems: items };
    };
    let includeKey = withKey;
    for (;;) {
      try {
        await this.#doc.send(new TransactWriteCommand(build(includeKey)));
        return "applied";
      } catch (error) {
        const reasons = cancellationReasons(error);
        if (!reasons) throw error;
        if (failed(reasons[0])) return "changed";
        if (includeKey && failed(reasons[2])) {
          // The key is gone or reused: the request must still finish; TTL just skips the key.
          includeKey = false;
          continue;
        }
        throwIfTransient(reasons, error);
        throw error;
      }
    }
  }

  /** Epoch seconds at which DynamoDB TTL may delete a request finished at `finishedAt` ms. */
  #ttlFor(queue: string, finishedAt: number): number {
    return Math.floor(finishedAt / 1000) + this.#retentionDaysFor(queue) * SECONDS_PER_DAY;
  }

  // ---------------------------------------------------------------- retries, repair

  /** Runs `op` again, with jittered backoff, while DynamoDB reports a transient conflict. */
  async #retrying<T>(op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (error) {
        if (!(error instanceof TransientConflict)) throw error;
        if (attempt >= CONFLICT_ATTEMPTS) {
          throw new ConcurrentUpdateError("too many concurrent writers; try again", {
            cause: error,
          });
        }
        await sleep(Math.random() * Math.min(500, 10 * 2 ** attempt));
      }
    }
  }

  /**
   * Counters recomputed from the sweep index (QUEUED and ACTIVE partitions, each entry
   * confirmed by a consistent read) for every configured queue. With `fix`, a queue whose
   * counters differ gets them overwritten, conditioned on the counters still being what was
   * read before counting, so a write that lands meanwhile is never undone (that queue is
   * counted again). Not part of the port: cost grows with the queue's waiting and active
   * requests; for the repair sweep only. On AWS a just-written request may not be in the
   * index yet, so a sweep should act on a mismatch it sees twice.
   */
  async recount(options: RecountOptions = {}): Promise<Record<string, QueueCounts>> {
    const out: Record<string, QueueCounts> = {};
    for (const queue of [...new Set(this.#queues())].sort()) {
      for (let attempt = 1; ; attempt++) {
        const stored = await this.#countersItem(queue);
        const split = await this.#countQueuedByPriority(queue);
        const counted: QueueCounts = {
          queued: split.reduce((a, b) => a + b, 0),
          running: await this.#countSweep(sweepActivePk(queue), ACTIVE_STATUSES),
        };
        const tenants = await this.#countTenants(queue);
        const storedTenants = tenantFigures(stored);
        out[queue] = counted;
        const old = {
          queued: stored?.queued as number | undefined,
          running: stored?.running as number | undefined,
        };
        const same =
          (old.queued ?? 0) === counted.queued &&
          (old.running ?? 0) === counted.running &&
          PRIORITIES.every(
            (p) => ((stored?.[queuedAt(p)] as number | undefined) ?? 0) === split[p],
          ) &&
          sameTenantFigures(storedTenants, tenants);
        if (!options.fix || same) break;
        if (await this.#setCounters(queue, old, counted, split, tenants, storedTenants)) break;
        if (attempt >= CONFLICT_ATTEMPTS) {
          throw new ConcurrentUpdateError(`queue ${queue}: counters kept moving during recount`);
        }
      }
    }
    return out;
  }

  /**
   * createdAt of the queue's oldest QUEUED request, for the operations metric. It reads the
   * sweep index's keys only: request ids are ULIDs, whose first 48 bits are the creation
   * time, so no item needs to be fetched. O(queued), bounded by maxQueued.
   */
  async oldestQueuedAt(queue: string): Promise<number | null> {
    const expr = new Expression();
    const condition = `${expr.name(INDEXES.sweep.partitionKey)} = ${expr.value(sweepQueuedPk(queue))}`;
    let oldest: number | null = null;
    const pages = this.#pages({
      TableName: this.#table,
      IndexName: INDEXES.sweep.name,
      KeyConditionExpression: condition,
      ...expr.params(),
    });
    for await (const keys of pages) {
      for (const k of keys) {
        const id = requestIdOfPk(String(k[TABLE_KEY.partitionKey])).slice("req_".length);
        const t = decodeTime(id);
        if (oldest === null || t < oldest) oldest = t;
      }
    }
    return oldest;
  }

  /** QUEUED requests of the queue per priority (index 0–9), read through the sweep index. */
  async #countQueuedByPriority(queue: string): Promise<number[]> {
    const split = PRIORITIES.map(() => 0);
    for await (const item of this.#sweepItems(sweepQueuedPk(queue), {
      attributes: ["status", "priority"],
    })) {
      if (item.status !== RequestStatus.QUEUED) continue;
      const p = item.priority as number;
      split[p] = (split[p] ?? 0) + 1;
    }
    return split;
  }

  /**
   * The items of one sweep-index partition, read from the table (`attributes` of each), page
   * by page: the index is eventually consistent, the items are what they are.
   */
  async *#sweepItems(
    partition: string,
    options: {
      below?: string | null;
      attributes?: readonly string[];
      pageSize?: () => number;
    } = {},
  ): AsyncGenerator<Record<string, unknown>> {
    const expr = new Expression();
    let condition = `${expr.name(INDEXES.sweep.partitionKey)} = ${expr.value(partition)}`;
    if (options.below != null) {
      condition += ` AND ${expr.name(INDEXES.sweep.sortKey)} < ${expr.value(options.below)}`;
    }
    const pages = this.#pages(
      {
        TableName: this.#table,
        IndexName: INDEXES.sweep.name,
        KeyConditionExpression: condition,
        ...expr.params(),
      },
      options.pageSize ?? (() => BATCH_GET_MAX),
    );
    for await (const entries of pages) {
      const keys = entries.map((k) => ({
        [TABLE_KEY.partitionKey]: k[TABLE_KEY.partitionKey] as string,
        [TABLE_KEY.sortKey]: k[TABLE_KEY.sortKey] as string,
      }));
      yield* await this.#batchGet(keys, options.attributes);
    }
  }

  /** Per-tenant QUEUED (by priority) and active counts, read through the sweep index. */
  async #countTenants(queue: string): Promise<Map<string, TenantFigures>> {
    const out = new Map<string, TenantFigures>();
    const of = (tenant: string): TenantFigures => {
      let f = out.get(tenant);
      if (!f) {
        f = { queued: 0, byPriority: PRIORITIES.map(() => 0), running: 0, bucketAt: null };
        out.set(tenant, f);
      }
      return f;
    };
    const attributes = ["status", "priority", "tenant"];
    for await (const item of this.#sweepItems(sweepQueuedPk(queue), { attributes })) {
      if (item.status !== RequestStatus.QUEUED) continue;
      const f = of(item.tenant as string);
      f.queued++;
      const p = item.priority as number;
      f.byPriority[p] = (f.byPriority[p] ?? 0) + 1;
    }
    for await (const item of this.#sweepItems(sweepActivePk(queue), { attributes })) {
      if (!ACTIVE_STATUSES.includes(item.status as RequestStatus)) continue;
      of(item.tenant as string).running++;
    }
    return out;
  }

  async #countSweep(partition: string, statuses: readonly RequestStatus[]): Promise<number> {
    let count = 0;
    for await (const item of this.#sweepItems(partition, { attributes: ["status"] })) {
      if (statuses.includes(item.status as RequestStatus)) count++;
    }
    return count;
  }

  /** Overwrites a queue's counters if they still hold `old`; false when they moved. */
  async #setCounters(
    queue: string,
    old: { queued: number | undefined; running: number | undefined },
    next: QueueCounts,
    split: readonly number[],
    tenants: ReadonlyMap<string, TenantFigures>,
    storedTenants: ReadonlyMap<string, TenantFigures>,
  ): Promise<boolean> {
    const expr = new Expression();
    const unchanged = (["queued", "running"] as const).map((field) => {
      const value = old[field];
      return value === undefined
        ? `attribute_not_exists(${expr.name(field)})`
        : `${expr.name(field)} = ${expr.value(value)}`;
    });
    const update = new UpdateClauses(expr).set("queued", next.queued).set("running", next.running);
    for (const p of PRIORITIES) update.set(queuedAt(p), split[p] ?? 0);
    // Tenant attribute names hold `#`, so they get placeholders of their own. A tenant the
    // item knows and the count does not is set to zero (its bucket is left as it is).
    let n = 0;
    const setTenant = (attribute: string, value: number) => {
      const placeholder = `#tenant${n++}`;
      expr.names[placeholder] = attribute;
      return `${placeholder} = ${expr.value(value)}`;
    };
    const tenantSets: string[] = [];
    for (const tenant of new Set([...tenants.keys(), ...storedTenants.keys()])) {
      const f = tenants.get(tenant);
      const was = storedTenants.get(tenant);
      tenantSets.push(setTenant(tenantAttr("q", tenant), f?.queued ?? 0));
      tenantSets.push(setTenant(tenantAttr("r", tenant), f?.running ?? 0));
      for (const p of PRIORITIES) {
        const value = f?.byPriority[p] ?? 0;
        if (value !== 0 || (was?.byPriority[p] ?? 0) !== 0) {
          tenantSets.push(setTenant(tenantAttr(`q${p}`, tenant), value));
        }
      }
    }
    const updateExpression =
      tenantSets.length > 0
        ? update.toString().replace(/^SET /, `SET ${tenantSets.join(", ")}, `)
        : update.toString();
    try {
      await this.#doc.send(
        new UpdateCommand({
          TableName: this.#table,
          Key: countersKey(queue),
          UpdateExpression: updateExpression,
          ConditionExpression: unchanged.join(" AND "),
          ...expr.params(),
        }),
      );
      return true;
    } catch (error) {
      if (isConditionalCheckFailed(error) || isTransientWriteError(error)) return false;
      throw error;
    }
  }
}

/** Exposed for tests: the idempotency item key of a tenant's key. */
export function idempotencyItemKey(tenant: string, key: string): Record<string, string> {
  return idemKey(tenant, key);
}

/** Exposed for tests and repair tools: the key of a request item. */
export function requestItemKey(id: string): Record<string, string> {
  return requestKey(id);
}

/** Exposed for tests and repair tools: the key of a queue's counters item. */
export function countersItemKey(queue: string): Record<string, string> {
  return countersKey(queue);
}

/**
 * A request item as a stream image or a raw read shows it (plain values, already
 * unmarshalled): the record and the item's `rev` (bumped by every write of the item, so it
 * orders a request's writes); null for an item of another kind.
 */
export function requestItemImage(
  item: Record<string, unknown>,
): { request: RequestRecord; rev: number } | null {
  if (item[TABLE_KEY.sortKey] !== ITEM_KIND.request.sk || typeof item.id !== "string") return null;
  return { request: fromItem(item), rev: typeof item.rev === "number" ? item.rev : 0 };
}
