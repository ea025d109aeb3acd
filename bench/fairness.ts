/**
 * What a fair claim costs as the number of waiting tenants grows (issue 11): with 1, 10 and
 * 100 tenants waiting in one queue, the time of a claim on SQLite and the calls and read
 * units of one on DynamoDB (moto, capacity computed from item sizes: capacity.ts). The
 * one-tenant figure is the floor: the claim of a queue nobody shares.
 *
 * Every tenant waits with the same priority and nobody runs at first, so the claims meet
 * ties (same priority, same active count), the case that costs most on DynamoDB: the tie
 * goes to the oldest head, which the head hints on the counters item give (checked by
 * one read of the winner); without them it took a read per tied tenant. Each claim is its
 * own pass (no `pass` object): what a dispatcher pays for the first claim of a wake-up.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { createTable } from "../functions/adapters/aws/bootstrap.ts";
import { INDEXES, TABLE_KEY } from "../functions/adapters/aws/definitions.ts";
import { DynamoRequestStore } from "../functions/adapters/aws/dynamo-request-store.ts";
import { SqliteRequestStore } from "../functions/adapters/embedded/sqlite-store.ts";
import type { RequestStore } from "../functions/core/ports.ts";
import type { RequestRecord } from "../functions/core/request.ts";
import { CapacityCalculator, type DynamoInput } from "./capacity.ts";
import type { BenchContext, BenchResult, BenchSection } from "./section.ts";
import { distribution, ms, ratioText } from "./stats.ts";

const QUEUE = "shared";
const T0 = Date.UTC(2030, 0, 1);
const ROOMY = { maxQueued: 1_000_000, retryAfterSeconds: 1 };
const SLOTS = { maxRunning: 1_000_000 };

let seq = 0;
function request(tenant: string, createdAt: number, queue = QUEUE): RequestRecord {
  seq++;
  return {
    id: `req_${String(seq).padStart(26, "0")}`,
    tenant,
    queue,
    status: "QUEUED",
    priority: 0,
    input: { n: seq },
    metadata: {},
    webhook: null,
    idempotencyKey: null,
    createdAt,
    startedAt: null,
    finishedAt: null,
    updatedAt: createdAt,
    attempt: 0,
    maxAttempts: 3,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 600,
    queueTtlSeconds: 86_400,
    expiresAt: createdAt + 86_400_000,
    progress: null,
    error: null,
    jobRef: null,
  };
}

/** `depth` requests spread over `tenants` tenants, interleaved in time. */
async function seed(
  store: RequestStore,
  tenants: number,
  depth: number,
  queue = QUEUE,
): Promise<void> {
  for (let i = 0; i < depth; i++) {
    await store.submit(request(`tenant-${i % tenants}`, T0 + i, queue), null, ROOMY);
  }
}

interface SqliteRow {
  tenants: number;
  depth: number;
  claims: number;
  p50Ms: number;
  p90Ms: number;
}

async function sqliteCost(tenants: number, depth: number, claims: number): Promise<SqliteRow> {
  const dir = mkdtempSync(join(tmpdir(), "bench-fair-"));
  const store = new SqliteRequestStore(join(dir, "fair.db"));
  try {
    await seed(store, tenants, depth);
    const times: number[] = [];
    for (let i = 0; i < claims; i++) {
      const t = performance.now();
      const claim = await store.claimNext(QUEUE, SLOTS, T0);
      times.push(performance.now() - t);
      if (claim.kind !== "started") throw new Error(`claim ${i} found ${claim.kind}`);
    }
    const d = distribution(times);
    return { tenants, depth, claims, p50Ms: d.p50, p90Ms: d.p90 };
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface DynamoRow {
  tenants: number;
  depth: number;
  claims: number;
  callsPerClaim: number;
  rruPerClaim: number;
  calls: Record<string, number>;
  /** The same claims made in one dispatch pass (claimNext's `pass`), on a queue of their own. */
  inPass: { callsPerClaim: number; rruPerClaim: number };
}

async function dynamoCost(
  endpoint: string,
  tenants: number,
  depth: number,
  claims: number,
): Promise<DynamoRow> {
  const credentials = { accessKeyId: "bench", secretAccessKey: "bench" };
  const plumbing = new DynamoDBClient({ endpoint, region: "us-east-1", credentials });
  const table = `bench-fair-${Date.now().toString(36)}-${tenants}`;
  await createTable(plumbing, table);
  const shape = {
    partitionKey: TABLE_KEY.partitionKey,
    sortKey: TABLE_KEY.sortKey,
    indexes: Object.values(INDEXES),
  };
  const calculator = new CapacityCalculator(plumbing, () => shape);
  const metered = new DynamoDBClient({ endpoint, region: "us-east-1", credentials });
  const calls: Record<string, number> = {};
  let rru = 0;
  let on = false;
  metered.middlewareStack.add(
    (next, context) => async (args) => {
      if (!on) return next(args);
      const op = String(context.commandName ?? "?").replace(/Command$/, "");
      calls[op] = (calls[op] ?? 0) + 1;
      return calculator.measure(
        op,
        args.input as DynamoInput,
        () => next(args),
        (units) => {
          rru += units.read;
        },
      );
    },
    { step: "build", name: "benchFairnessCapacity", priority: "low" },
  );
  const passQueue = `${QUEUE}-pass`;
  const store = new DynamoRequestStore({
    client: metered,
    tableName: table,
    queues: () => [QUEUE, passQueue],
  });
  /** Makes `claims` claims of `queue`, each its own pass or all in one; calls and RRU. */
  const measure = async (queue: string, pass?: object) => {
    for (const k of Object.keys(calls)) delete calls[k];
    rru = 0;
    on = true;
    for (let i = 0; i < claims; i++) {
      const claim = await store.claimNext(queue, SLOTS, T0, pass);
      if (claim.kind !== "started") throw new Error(`claim ${i} found ${claim.kind}`);
    }
    on = false;
    const total = Object.values(calls).reduce((a, b) => a + b, 0);
    return { callsPerClaim: total / claims, rruPerClaim: rru / claims, calls: { ...calls } };
  };
  try {
    await seed(store, tenants, depth);
    await seed(store, tenants, depth, passQueue);
    const alone = await measure(QUEUE);
    const inPass = await measure(passQueue, {});
    return {
      tenants,
      depth,
      claims,
      ...alone,
      inPass: { callsPerClaim: inPass.callsPerClaim, rruPerClaim: inPass.rruPerClaim },
    };
  } finally {
    metered.destroy();
    plumbing.destroy();
  }
}

export const fairnessSection: BenchSection = {
  key: "fairness",
  title: "Fair claim: cost with 1, 10 and 100 waiting tenants",
  async run(ctx: BenchContext): Promise<BenchResult> {
    const counts = [1, 10, 100];
    const sqliteDepth = ctx.quick ? 300 : 3000;
    const dynamoDepth = ctx.quick ? 100 : 200;
    const claims = ctx.quick ? 20 : 50;
    const sqlite: SqliteRow[] = [];
    const dynamo: DynamoRow[] = [];
    for (const tenants of counts) {
      ctx.log(`fairness: SQLite, ${tenants} tenants`);
      sqlite.push(await sqliteCost(tenants, sqliteDepth, Math.min(claims * 4, sqliteDepth)));
      ctx.log(`fairness: DynamoDB, ${tenants} tenants`);
      dynamo.push(await dynamoCost(ctx.motoEndpoint, tenants, dynamoDepth, claims));
    }
    const sFloor = sqlite[0] as SqliteRow;
    const dFloor = dynamo[0] as DynamoRow;
    const lines = [
      `Claims from one queue with every tenant waiting at one priority, nobody running at`,
      `first (ties: the costly case). SQLite: ${sqliteDepth} waiting requests, time per claim`,
      `in process. DynamoDB (moto): ${dynamoDepth} waiting, ${claims} claims, calls and read`,
      `units per claim computed from item sizes, each claim its own dispatch pass (what the`,
      `first claim of a wake-up pays), and the same claims made in one pass. Floor: one tenant.`,
      "",
      "| tenants | SQLite p50 | p90 | × floor | DynamoDB calls/claim | RRU/claim | × floor (RRU) | calls by operation | in one pass: calls/claim | RRU/claim |",
      "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
      ...counts.map((t, i) => {
        const s = sqlite[i] as SqliteRow;
        const d = dynamo[i] as DynamoRow;
        return `| ${t} | ${ms(s.p50Ms)} | ${ms(s.p90Ms)} | ${ratioText(s.p50Ms, sFloor.p50Ms)} | ${d.callsPerClaim.toFixed(1)} | ${d.rruPerClaim.toFixed(1)} | ${ratioText(d.rruPerClaim, dFloor.rruPerClaim)} | ${Object.entries(
          d.calls,
        )
          .map(([op, n]) => `${op} ${(n / d.claims).toFixed(1)}`)
          .join(
            ", ",
          )} | ${d.inPass.callsPerClaim.toFixed(1)} | ${d.inPass.rruPerClaim.toFixed(1)} |`;
      }),
    ];
    const last = counts.length - 1;
    return {
      markdown: lines.join("\n"),
      json: { sqlite, dynamo },
      summary: [
        {
          measure: `Fair claim, SQLite p50 with ${counts[last]} waiting tenants`,
          value: ms((sqlite[last] as SqliteRow).p50Ms),
          floor: ms(sFloor.p50Ms),
          ratio: ratioText((sqlite[last] as SqliteRow).p50Ms, sFloor.p50Ms),
        },
        {
          measure: `Fair claim, DynamoDB RRU with ${counts[last]} waiting tenants`,
          value: (dynamo[last] as DynamoRow).rruPerClaim.toFixed(1),
          floor: dFloor.rruPerClaim.toFixed(1),
          ratio: ratioText((dynamo[last] as DynamoRow).rruPerClaim, dFloor.rruPerClaim),
        },
      ],
    };
  },
};
