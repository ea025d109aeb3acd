import {
  DeleteTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  DynamoDBClient,
  TransactionCanceledException,
} from "@aws-sdk/client-dynamodb";
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  TransactWriteCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import { mockClient } from "aws-sdk-client-mock";
import { ulid } from "ulidx";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createTable } from "../../functions/adapters/aws/bootstrap.ts";
import { INDEXES, TTL_ATTRIBUTE } from "../../functions/adapters/aws/definitions.ts";
import {
  countersItemKey,
  DynamoRequestStore,
  type DynamoRequestStoreOptions,
  idempotencyItemKey,
  requestItemKey,
} from "../../functions/adapters/aws/dynamo-request-store.ts";
import { ConcurrentUpdateError } from "../../functions/core/errors.ts";
import type { IdempotencyClaim } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { describeRequestStoreContract } from "./request-store.contract.ts";

const endpoint = inject("awsEndpoint");
const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const DAY = 86_400;

/**
 * A client for the emulator. Concurrency is real: the test harness's moto server
 * (test/helpers/moto_server.py) handles DynamoDB calls one at a time, as DynamoDB isolates
 * transactions, so the stores' read-then-conditional-write interleavings are what the
 * concurrency tests exercise.
 */
function newClient(): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
}

// One table for the whole file: creating one takes a while, and every contract test works in
// its own tenant and queue, so tests never see each other's items.
const tableName = `longrun-store-${ulid().toLowerCase()}`;
const admin = newClient();
const adminDoc = DynamoDBDocumentClient.from(admin);

/** Every queue any store of this file has seen a submit for: the stores' queue list. */
const seenQueues = new Set<string>();

/** Records the queue of every submit, standing in for the configured queue list. */
class TrackingStore extends DynamoRequestStore {
  override async submit(
    ...args: Parameters<DynamoRequestStore["submit"]>
  ): ReturnType<DynamoRequestStore["submit"]> {
    seenQueues.add(args[0].queue);
    return super.submit(...args);
  }
}

function storeOn(
  client: DynamoDBClient | DynamoDBDocumentClient,
  options: Partial<DynamoRequestStoreOptions> = {},
): TrackingStore {
  return new TrackingStore({ client, tableName, queues: () => [...seenQueues], ...options });
}

beforeAll(async () => {
  await createTable(admin, tableName);
});

afterAll(async () => {
  await admin.send(new DeleteTableCommand({ TableName: tableName }));
  admin.destroy();
});

// Each contract test gets a table of its own, dropped after it. moto copies a whole table
// before every transaction it runs, to roll back on failure (test/helpers/moto_server.py):
// on one table for the whole file that copy grows with every test, and the file's time and
// the emulator's memory with it. A fresh table keeps each copy test-sized.
describeRequestStoreContract("DynamoRequestStore", async () => {
  const table = `longrun-contract-${ulid().toLowerCase()}`;
  await createTable(admin, table);
  const clients = [newClient()];
  const on = (client: DynamoDBClient) => storeOn(client, { tableName: table });
  return {
    store: on(clients[0] as DynamoDBClient),
    async another() {
      const client = newClient();
      clients.push(client);
      return on(client);
    },
    async cleanup() {
      for (const c of clients) c.destroy();
      await admin.send(new DeleteTableCommand({ TableName: table }));
    },
  };
});

/** A QUEUED request in a queue and tenant of its own. */
function queued(overrides: Partial<RequestRecord> = {}): RequestRecord {
  const createdAt = overrides.createdAt ?? T0;
  return {
    id: `req_${ulid()}`,
    tenant: `t-${ulid().toLowerCase()}`,
    queue: `q-${ulid().toLowerCase()}`,
    status: "QUEUED",
    priority: 0,
    input: { n: 1 },
    metadata: {},
    webhook: null,
    idempotencyKey: null,
    createdAt,
    startedAt: null,
    finishedAt: null,
    updatedAt: 0,
    attempt: 0,
    maxAttempts: 3,
    platformRetries: 0,
    cancelRequested: false,
    timeoutSeconds: 60,
    queueTtlSeconds: 3600,
    expiresAt: createdAt + 3_600_000,
    progress: null,
    error: null,
    jobRef: null,
    ...overrides,
  };
}

const ROOMY = { maxQueued: 1000, retryAfterSeconds: 1 };

/** A client whose every command name (QueryCommand, ScanCommand, …) is recorded in `sent`. */
function recordingClient(): { client: DynamoDBClient; sent: string[] } {
  const client = newClient();
  const sent: string[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push(String(context.commandName));
      return next(args);
    },
    { step: "initialize", name: "recordCommandNames" },
  );
  return { client, sent };
}

async function rawItem(key: Record<string, string>): Promise<Record<string, unknown> | undefined> {
  const out = await adminDoc.send(
    new GetCommand({ TableName: tableName, Key: key, ConsistentRead: true }),
  );
  return out.Item;
}

describe("DynamoRequestStore on DynamoDB", () => {
  it("submits a request with its idempotency key in one TransactWriteItems call, then reads its position", async () => {
    // Prepare
    const { client, sent } = recordingClient();
    const store = storeOn(client);
    const r = queued({ idempotencyKey: "k" });

    // Act
    const outcome = await store.submit(r, { key: "k", bodyHash: "h" }, ROOMY);

    // Assess
    expect(outcome).toMatchObject({ kind: "created", position: 0 });
    // The position comes from the counters item: one read, whatever the queue's depth.
    expect(sent).toEqual(["TransactWriteItemsCommand", "GetItemCommand"]);
    expect(await rawItem(idempotencyItemKey(r.tenant, "k"))).toMatchObject({
      requestId: r.id,
      bodyHash: "h",
    });
    expect(await rawItem(countersItemKey(r.queue))).toMatchObject({ queued: 1, queued_p0: 1 });
    client.destroy();
  });

  it("gives the position at submit as if the new request were the newest of its priority", async () => {
    // Prepare: hosts' clocks may disagree, so a new request can be dated before a waiting
    // one of its priority; the counters cannot see that (SQLite's submit checks the index).
    const store = storeOn(admin);
    const later = queued({ priority: 3, createdAt: T0 + 10 });
    const scope = { tenant: later.tenant, queue: later.queue };
    await store.submit(queued({ ...scope, priority: 8, createdAt: T0 + 20 }), null, ROOMY);
    await store.submit(later, null, ROOMY);
    const earlier = queued({ ...scope, priority: 3, createdAt: T0 + 5 });

    // Act
    const outcome = await store.submit(earlier, null, ROOMY);

    // Assess
    expect(outcome).toMatchObject({ kind: "created", position: 2 });
    expect(await store.position(earlier)).toBe(1);
    expect(await store.position(later)).toBe(2);
  });

  it("reads the counters item once per dispatch pass and a partition once for its claims", async () => {
    // Prepare
    const first = queued();
    const scope = { tenant: first.tenant, queue: first.queue };
    await storeOn(admin).submit(first, null, ROOMY);
    for (const createdAt of [T0 + 1, T0 + 2]) {
      await storeOn(admin).submit(queued({ ...scope, createdAt }), null, ROOMY);
    }
    const { client, sent } = recordingClient();
    // A fixed clock: the pass's view never ages here, however slow the emulator is.
    const store = storeOn(client, { now: () => T0 });
    const pass = {};

    // Act
    const kinds: string[] = [];
    for (let i = 0; i < 4; i++) {
      kinds.push((await store.claimNext(scope.queue, { maxRunning: 10 }, T0, pass)).kind);
    }

    // Assess: the counters once, the partition once, then each request read and claimed;
    // the pass's own snapshot says when nothing is left.
    expect(kinds).toEqual(["started", "started", "started", "empty"]);
    expect(sent).toEqual([
      "GetItemCommand",
      "QueryCommand",
      ...Array.from({ length: 3 }, () => ["GetItemCommand", "TransactWriteItemsCommand"]).flat(),
    ]);
    expect(await store.queueCounts(scope.queue)).toEqual({ queued: 0, running: 3 });
    client.destroy();
  });

  it("reads the counters again once a pass's view is a second old, and sees a higher priority", async () => {
    // Prepare
    const low1 = queued();
    const scope = { tenant: low1.tenant, queue: low1.queue };
    await storeOn(admin).submit(low1, null, ROOMY);
    for (const createdAt of [T0 + 1, T0 + 2]) {
      await storeOn(admin).submit(queued({ ...scope, createdAt }), null, ROOMY);
    }
    let clock = T0;
    const store = storeOn(admin, { now: () => clock });
    const pass = {};
    const first = await store.claimNext(scope.queue, { maxRunning: 10 }, T0, pass);
    const high = queued({ ...scope, priority: 7, createdAt: T0 + 3 });
    await storeOn(admin).submit(high, null, ROOMY);

    // Act: within the second the pass goes on from its view; after it, it looks again.
    clock = T0 + 1001;
    const second = await store.claimNext(scope.queue, { maxRunning: 10 }, T0, pass);

    // Assess
    expect(first).toMatchObject({ kind: "started", request: { id: low1.id } });
    expect(second).toMatchObject({ kind: "started", request: { id: high.id } });
  });

  it("claims a tenant's only request from its hint, without reading the partition", async () => {
    // Prepare
    const r = queued();
    await storeOn(admin).submit(r, null, ROOMY);
    const { client, sent } = recordingClient();
    const store = storeOn(client);

    // Act
    const claim = await store.claimNext(r.queue, { maxRunning: 1 }, T0);

    // Assess: the counters item, the request it names, the claim.
    expect(claim).toMatchObject({ kind: "started", request: { id: r.id } });
    expect(sent).toEqual(["GetItemCommand", "GetItemCommand", "TransactWriteItemsCommand"]);
    client.destroy();
  });

  it("breaks a tie of 20 tenants with one partition read, not one per tenant", async () => {
    // Prepare: 20 tenants with two requests each, all at one priority and nobody running.
    const queue = `q-${ulid().toLowerCase()}`;
    const tenants = Array.from({ length: 20 }, (_, i) => `t${i}-${ulid().toLowerCase()}`);
    const oldest = queued({ queue, tenant: tenants[7], createdAt: T0 });
    for (const [i, tenant] of tenants.entries()) {
      if (i === 7) await storeOn(admin).submit(oldest, null, ROOMY);
      else
        await storeOn(admin).submit(queued({ queue, tenant, createdAt: T0 + 1 + i }), null, ROOMY);
      await storeOn(admin).submit(queued({ queue, tenant, createdAt: T0 + 100 + i }), null, ROOMY);
    }
    const { client, sent } = recordingClient();
    const store = storeOn(client);

    // Act
    const claim = await store.claimNext(queue, { maxRunning: 100 }, T0);

    // Assess: the oldest head won; its tenant's partition gave the next head for the hint.
    expect(claim).toMatchObject({ kind: "started", request: { id: oldest.id } });
    expect(sent).toEqual([
      "GetItemCommand",
      "QueryCommand",
      "GetItemCommand",
      "TransactWriteItemsCommand",
    ]);
    client.destroy();
  });

  it("restores each tenant's figures on the counters item with a recount that fixes", async () => {
    // Prepare: two tenants, one running; then the per-tenant figures damaged by hand.
    const store = storeOn(admin);
    const a = queued({ createdAt: T0 });
    const scope = { queue: a.queue };
    const b = queued({ ...scope, tenant: `${a.tenant}-b`, priority: 3, createdAt: T0 + 1 });
    const a2 = queued({ ...scope, tenant: a.tenant, createdAt: T0 + 2 });
    for (const r of [a, b, a2]) await store.submit(r, null, ROOMY);
    await store.claimNext(a.queue, { maxRunning: 10 }, T0);
    await adminDoc.send(
      new UpdateCommand({
        TableName: tableName,
        Key: countersItemKey(a.queue),
        UpdateExpression: "SET #tr = :wrong REMOVE #tq, #tq3",
        ExpressionAttributeNames: {
          "#tr": `tr#${a.tenant}`,
          "#tq": `tq#${b.tenant}`,
          "#tq3": `tq3#${b.tenant}`,
        },
        ExpressionAttributeValues: { ":wrong": 7 },
      }),
    );

    // Act
    await store.recount({ fix: true });

    // Assess: b (priority 3) was started first; a runs none and waits with two.
    expect(await store.tenantCounts(a.queue, a.tenant)).toEqual({ queued: 2, running: 0 });
    expect(await store.tenantCounts(a.queue, b.tenant)).toEqual({ queued: 0, running: 1 });
    expect(await rawItem(countersItemKey(a.queue))).toMatchObject({
      [`tq0#${a.tenant}`]: 2,
      [`tq#${b.tenant}`]: 0,
      [`tr#${a.tenant}`]: 0,
      [`tr#${b.tenant}`]: 1,
    });
    const next = await store.claimNext(a.queue, { maxRunning: 10 }, T0);
    expect(next).toMatchObject({ kind: "started", request: { id: a.id } });
  });

  it("counts positions on the index when the counters item has no per-priority split", async () => {
    // Prepare: a counters item as written before the split existed.
    const store = storeOn(admin);
    const a = queued({ priority: 5 });
    const scope = { tenant: a.tenant, queue: a.queue };
    const b = queued({ ...scope, priority: 5, createdAt: T0 + 1 });
    const c = queued({ ...scope, priority: 1, createdAt: T0 + 2 });
    for (const r of [a, b, c]) await store.submit(r, null, ROOMY);
    await adminDoc.send(
      new UpdateCommand({
        TableName: tableName,
        Key: countersItemKey(a.queue),
        UpdateExpression: "REMOVE queued_p5, queued_p1",
      }),
    );

    // Act
    const d = await store.submit(queued({ ...scope, priority: 9, createdAt: T0 + 3 }), null, ROOMY);
    const together = await store.positions([a, b, c]);

    // Assess
    expect(d).toMatchObject({ kind: "created" });
    expect(d).not.toHaveProperty("position", expect.anything());
    expect([await store.position(a), await store.position(b), await store.position(c)]).toEqual([
      1, 2, 3,
    ]);
    expect(together).toEqual(
      new Map([
        [a.id, 1],
        [b.id, 2],
        [c.id, 3],
      ]),
    );
    // A recount with `fix` restores the split.
    await store.recount({ fix: true });
    expect(await rawItem(countersItemKey(a.queue))).toMatchObject({
      queued: 4,
      queued_p1: 1,
      queued_p5: 2,
      queued_p9: 1,
    });
  });

  it("reads a position deep in its priority, and a list page's, without reading the index", async () => {
    // Prepare: two tenants at one priority, one of them 24 deep, requests cancelled ahead
    // of and behind the probed one. The positions to expect come from a store that knows no
    // sequence places (records not read through it), which counts on the index as before.
    const writer = storeOn(admin);
    const a = queued({ priority: 2 });
    const scope = { tenant: a.tenant, queue: a.queue };
    const other = `${a.tenant}-b`;
    const mine: RequestRecord[] = [];
    for (let i = 0; i < 24; i++) {
      const r = i === 0 ? a : queued({ ...scope, priority: 2, createdAt: T0 + i * 10 });
      await writer.submit(r, null, ROOMY);
      mine.push(r);
      if (i % 2 === 1) {
        await writer.submit(
          queued({ ...scope, tenant: other, priority: 2, createdAt: T0 + i * 10 + 1 }),
          null,
          ROOMY,
        );
      }
    }
    for (const i of [3, 20]) {
      await writer.transition({
        id: (mine[i] as RequestRecord).id,
        from: ["QUEUED"],
        to: "CANCELLED",
      });
    }
    const deep = mine[10] as RequestRecord;
    const waiting = mine.filter((_, i) => i !== 3 && i !== 20);
    const expected = await storeOn(admin).positions(waiting);
    const { client, sent } = recordingClient();
    const store = storeOn(client);

    // Act
    const record = (await store.get(deep.id)) as RequestRecord;
    const before = sent.length;
    const position = await store.position(record);
    const positionCalls = sent.slice(before);
    const page = await store.list({ ...scope, limit: 10 });
    const afterList = sent.length;
    // The list endpoint asks for the positions of the page's QUEUED items.
    const pageQueued = page.items.filter((r) => r.status === "QUEUED");
    const pagePositions = await store.positions(pageQueued);
    const pageCalls = sent.slice(afterList);

    // Assess
    expect(position).toBe(expected.get(deep.id));
    expect(position).toBeGreaterThan(15);
    // The counters item and, for the other tenant, one pointer: no Query of the index.
    expect(positionCalls).toEqual(["GetItemCommand", "BatchGetItemCommand"]);
    expect(page.items).toHaveLength(10);
    expect(pageQueued).toHaveLength(9);
    for (const r of pageQueued) expect(pagePositions.get(r.id)).toBe(expected.get(r.id));
    // One counters read, and at most one BatchGetItem of pointers, whatever the depth.
    expect(pageCalls.filter((name) => name !== "BatchGetItemCommand")).toEqual(["GetItemCommand"]);
    expect(pageCalls.length).toBeLessThanOrEqual(2);
    client.destroy();
  });

  it("answers a submit's fair position from its own counters read while other tenants wait", async () => {
    // Prepare: another tenant waits at the same priority, older.
    const writer = storeOn(admin);
    const theirs = queued({ priority: 4, createdAt: T0 });
    await writer.submit(theirs, null, ROOMY);
    await writer.submit(
      queued({ queue: theirs.queue, tenant: theirs.tenant, priority: 4, createdAt: T0 + 1 }),
      null,
      ROOMY,
    );
    const { client, sent } = recordingClient();
    const store = storeOn(client);
    const mine = queued({ queue: theirs.queue, priority: 4, createdAt: T0 + 5 });

    // Act
    const outcome = await store.submit(mine, null, ROOMY);

    // Assess: b's head and a's request tie at level 0, b's is older; a's starts second.
    expect(outcome).toMatchObject({ kind: "created", position: 1 });
    expect(await store.position(mine)).toBe(1);
    expect(sent.slice(0, 3)).toEqual([
      "TransactWriteItemsCommand",
      "GetItemCommand",
      "BatchGetItemCommand",
    ]);
    client.destroy();
  });

  it("counts positions of requests written before sequences on the index, and sequences new ones after them", async () => {
    // Prepare: requests as written before sequences existed (no `seq`, no sequence figures
    // on the counters item), then new submits through a fresh store.
    const old = storeOn(admin);
    const first = queued({ priority: 1, createdAt: T0 });
    const scope = { tenant: first.tenant, queue: first.queue };
    const before = [
      first,
      ...[1, 2, 3].map((i) => queued({ ...scope, priority: 1, createdAt: T0 + i })),
    ];
    for (const r of before) await old.submit(r, null, ROOMY);
    for (const r of before) {
      await adminDoc.send(
        new UpdateCommand({
          TableName: tableName,
          Key: requestItemKey(r.id),
          UpdateExpression: "REMOVE seq",
        }),
      );
    }
    const counters = (await rawItem(countersItemKey(first.queue))) ?? {};
    const sequenceFigures = Object.keys(counters).filter((name) => /^t[ikcx][0-9]#/.test(name));
    expect(sequenceFigures.length).toBeGreaterThan(0);
    await adminDoc.send(
      new UpdateCommand({
        TableName: tableName,
        Key: countersItemKey(first.queue),
        UpdateExpression: `REMOVE ${sequenceFigures.map((_, i) => `#f${i}`).join(", ")}`,
        ExpressionAttributeNames: Object.fromEntries(sequenceFigures.map((n, i) => [`#f${i}`, n])),
      }),
    );
    const store = storeOn(admin);
    const after = [4, 5, 6].map((i) => queued({ ...scope, priority: 1, createdAt: T0 + i }));
    for (const r of after) await store.submit(r, null, ROOMY);
    await store.transition({
      id: (before[1] as RequestRecord).id,
      from: ["QUEUED"],
      to: "CANCELLED",
    });
    const waiting = [before[0], before[2], before[3], ...after] as RequestRecord[];

    // Act
    const positions = await Promise.all(
      waiting.map(async (r) => store.position((await store.get(r.id)) as RequestRecord)),
    );
    const together = await store.positions(waiting);

    // Assess
    expect(positions).toEqual([0, 1, 2, 3, 4, 5]);
    for (const [i, r] of waiting.entries()) expect(together.get(r.id)).toBe(i);
    expect(await rawItem(requestItemKey((after[0] as RequestRecord).id))).toMatchObject({ seq: 4 });
  });

  it("keeps the index keys in step with the status through the lifecycle", async () => {
    // Prepare
    const store = storeOn(admin);
    const r = queued();
    await store.submit(r, null, ROOMY);
    const atSubmit = await rawItem(requestItemKey(r.id));

    // Act
    await store.claimNext(r.queue, { maxRunning: 1 }, T0);
    const atStart = await rawItem(requestItemKey(r.id));
    await store.transition({ id: r.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });
    const atRun = await rawItem(requestItemKey(r.id));

    // Assess
    expect(atSubmit).toMatchObject({
      [INDEXES.ready.partitionKey]: `READY#${r.queue}#${r.tenant}`,
      [INDEXES.listByStatus.partitionKey]: `${r.tenant}#${r.queue}#QUEUED`,
      [INDEXES.sweep.partitionKey]: `QUEUED#${r.queue}`,
    });
    expect(atStart).not.toHaveProperty(INDEXES.ready.partitionKey);
    expect(atStart).not.toHaveProperty(INDEXES.ready.sortKey);
    expect(atStart).toMatchObject({
      [INDEXES.listByStatus.partitionKey]: `${r.tenant}#${r.queue}#STARTING`,
      [INDEXES.sweep.partitionKey]: `ACTIVE#${r.queue}`,
    });
    expect(atRun).toMatchObject({
      [INDEXES.listByStatus.partitionKey]: `${r.tenant}#${r.queue}#RUNNING`,
      [INDEXES.sweep.partitionKey]: `ACTIVE#${r.queue}`,
    });
    expect(atRun).not.toHaveProperty(TTL_ATTRIBUTE);
  });

  it("moves a request it has just read with one write and returns what a read would", async () => {
    // Prepare
    const { client, sent } = recordingClient();
    const store = storeOn(client);
    const r = queued();
    await store.submit(r, null, ROOMY);
    await store.claimNext(r.queue, { maxRunning: 1 }, T0);
    await store.get(r.id);
    sent.length = 0;

    // Act
    const running = await store.transition({
      id: r.id,
      from: ["STARTING"],
      to: "RUNNING",
      attempt: 1,
      set: { startedAt: T0 + 1, jobRef: "job-1" },
    });
    const readAfterRunning = await storeOn(admin).get(r.id);
    const finished = await store.transition({
      id: r.id,
      from: ["RUNNING"],
      to: "SUCCEEDED",
      attempt: 1,
      set: { finishedAt: T0 + 2, updatedAt: T0 + 2 },
    });

    // Assess
    expect(sent).toEqual(["UpdateItemCommand", "TransactWriteItemsCommand"]);
    expect(running).toEqual(readAfterRunning);
    expect(finished).toEqual(await storeOn(admin).get(r.id));
    expect(finished).toMatchObject({ status: "SUCCEEDED", finishedAt: T0 + 2, jobRef: "job-1" });
    client.destroy();
  });

  it("reads again when another writer changed the request since this store saw it", async () => {
    // Prepare
    const { client, sent } = recordingClient();
    const mine = storeOn(client);
    const other = storeOn(admin);
    const r = queued();
    await mine.submit(r, null, ROOMY);
    await mine.claimNext(r.queue, { maxRunning: 1 }, T0);
    await mine.transition({ id: r.id, from: ["STARTING"], to: "RUNNING", attempt: 1 });
    // Unseen by `mine`: progress (same status) and then a cancel request.
    await other.transition({
      id: r.id,
      from: ["RUNNING"],
      attempt: 1,
      set: { progress: { current: 40, total: 100, message: "m", updatedAt: T0 + 5 } },
    });
    sent.length = 0;

    // Act
    const finished = await mine.transition({
      id: r.id,
      from: ["RUNNING"],
      to: "SUCCEEDED",
      attempt: 1,
      set: { finishedAt: T0 + 9 },
    });
    const stale = await mine.transition({
      id: r.id,
      from: ["RUNNING"],
      to: "FAILED",
      attempt: 1,
    });

    // Assess
    expect(finished).toMatchObject({ status: "SUCCEEDED", progress: { current: 40 } });
    expect(finished).toEqual(await other.get(r.id));
    expect(stale).toBeNull();
    // The stale rev failed one transaction; a read and a second transaction settled it.
    expect(sent.slice(0, 3)).toEqual([
      "TransactWriteItemsCommand",
      "GetItemCommand",
      "TransactWriteItemsCommand",
    ]);
    expect(await rawItem(countersItemKey(r.queue))).toMatchObject({ queued: 0, running: 0 });
    client.destroy();
  });

  it("sets the TTL of a finished request and of its key to finishedAt plus the queue's retention", async () => {
    // Prepare
    const store = storeOn(admin, { retentionDaysFor: () => 7 });
    const r = queued({ idempotencyKey: "k" });
    await store.submit(r, { key: "k", bodyHash: "h" }, ROOMY);
    await store.claimNext(r.queue, { maxRunning: 1 }, T0);
    const finishedAt = T0 + 12_345;

    // Act
    const done = await store.transition({
      id: r.id,
      from: ["STARTING"],
      to: "SUCCEEDED",
      attempt: 1,
      set: { finishedAt },
    });

    // Assess
    const expected = Math.floor(finishedAt / 1000) + 7 * DAY;
    expect(done).toMatchObject({ status: "SUCCEEDED", finishedAt });
    const item = await rawItem(requestItemKey(r.id));
    expect(item?.[TTL_ATTRIBUTE]).toBe(expected);
    expect(item).not.toHaveProperty(INDEXES.sweep.partitionKey);
    expect(item).toMatchObject({
      [INDEXES.listByStatus.partitionKey]: `${r.tenant}#${r.queue}#SUCCEEDED`,
    });
    expect((await rawItem(idempotencyItemKey(r.tenant, "k")))?.[TTL_ATTRIBUTE]).toBe(expected);
  });

  it("sets the TTL when dispatch expires a request, from the dispatch instant", async () => {
    // Prepare
    const store = storeOn(admin, { retentionDaysFor: () => 2 });
    const r = queued({ expiresAt: T0 + 10 });
    await store.submit(r, null, ROOMY);

    // Act
    const claim = await store.claimNext(r.queue, { maxRunning: 1 }, T0 + 1000);

    // Assess
    expect(claim.kind).toBe("expired");
    const item = await rawItem(requestItemKey(r.id));
    expect(item?.[TTL_ATTRIBUTE]).toBe(Math.floor((T0 + 1000) / 1000) + 2 * DAY);
    expect(item).not.toHaveProperty(INDEXES.ready.partitionKey);
    expect(item).not.toHaveProperty(INDEXES.sweep.partitionKey);
  });

  it("lists, pages, counts positions and sweeps with Query only, never Scan", async () => {
    // Prepare
    const { client, sent } = recordingClient();
    const store = storeOn(client);
    const first = queued();
    const scope = { tenant: first.tenant, queue: first.queue };
    const all = [first];
    for (let i = 1; i < 5; i++) all.push(queued({ ...scope, createdAt: T0 + i }));
    for (const r of all) await store.submit(r, null, ROOMY);
    await store.claimNext(scope.queue, { maxRunning: 5 }, T0);
    sent.length = 0;

    // Act
    const page = await store.list({ ...scope, limit: 2 });
    await store.list({ ...scope, limit: 2, cursor: page.nextCursor ?? "" });
    await store.list({ ...scope, limit: 2, statuses: ["QUEUED", "STARTING"] });
    const position = await store.position(all[4] as RequestRecord);
    await store.findActive(10);
    await store.findExpired(T0, 10);

    // Assess
    expect(position).toBe(3);
    expect(sent).toContain("QueryCommand");
    expect(sent).not.toContain("ScanCommand");
    expect(new Set(sent)).toEqual(
      new Set(["QueryCommand", "BatchGetItemCommand", "GetItemCommand"]),
    );
    client.destroy();
  });

  it("frees a key whose request retention deleted, as SQLite's cascade does", async () => {
    // Prepare
    const store = storeOn(admin);
    const old = queued({ idempotencyKey: "k" });
    await store.submit(old, { key: "k", bodyHash: "h1" }, ROOMY);
    // DynamoDB TTL deletes items one by one: here the request went first.
    await adminDoc.send(new DeleteCommand({ TableName: tableName, Key: requestItemKey(old.id) }));
    const fresh = queued({ tenant: old.tenant, queue: old.queue, idempotencyKey: "k" });

    // Act
    const outcome = await store.submit(fresh, { key: "k", bodyHash: "h2" }, ROOMY);

    // Assess
    expect(outcome).toMatchObject({ kind: "created", request: fresh });
    expect(await rawItem(idempotencyItemKey(old.tenant, "k"))).toMatchObject({
      requestId: fresh.id,
      bodyHash: "h2",
    });
  });

  it("keeps keys of tenants apart even when tenant and key hold '#'", async () => {
    // Prepare
    const store = storeOn(admin);
    const queue = `q-${ulid().toLowerCase()}`;
    const base = `t-${ulid().toLowerCase()}`;
    const a = queued({ queue, tenant: `${base}#x`, idempotencyKey: "y" });
    const b = queued({ queue, tenant: base, idempotencyKey: "x#y" });

    // Act
    const first = await store.submit(a, { key: "y", bodyHash: "h" }, ROOMY);
    const second = await store.submit(b, { key: "x#y", bodyHash: "h" }, ROOMY);

    // Assess
    expect(first).toMatchObject({ kind: "created", request: a });
    expect(second).toMatchObject({ kind: "created", request: b });
  });

  it("handles tenants and queues outside ASCII", async () => {
    // Prepare
    const store = storeOn(admin);
    const tenant = `テナント-ü-${ulid()}`;
    const queue = `キュー-${ulid()}`;
    const r1 = queued({ tenant, queue, createdAt: T0 });
    const r2 = queued({ tenant, queue, createdAt: T0 + 1 });

    // Act
    await store.submit(r1, { key: "ключ", bodyHash: "h" }, ROOMY);
    await store.submit(r2, null, ROOMY);
    const replay = await store.submit(
      queued({ tenant, queue }),
      { key: "ключ", bodyHash: "h" },
      ROOMY,
    );
    const page = await store.list({ tenant, queue, limit: 10, statuses: ["QUEUED"] });
    const position = await store.position(r2);
    const claim = await store.claimNext(queue, { maxRunning: 1 }, T0);

    // Assess
    expect(replay).toEqual({ kind: "replayed", request: r1 });
    expect(page.items.map((r) => r.id)).toEqual([r2.id, r1.id]);
    expect(position).toBe(1);
    expect(claim.kind === "started" && claim.request.id).toBe(r1.id);
    expect(await store.queueCounts(queue)).toEqual({ queued: 1, running: 1 });
  });

  it("recounts the counters from the requests and repairs them when asked", async () => {
    // Prepare
    const queue = `q-${ulid().toLowerCase()}`;
    const store = storeOn(admin, { queues: () => [queue] });
    for (let i = 0; i < 3; i++) await store.submit(queued({ queue }), null, ROOMY);
    await store.claimNext(queue, { maxRunning: 5 }, T0);
    await adminDoc.send(
      new UpdateCommand({
        TableName: tableName,
        Key: countersItemKey(queue),
        UpdateExpression: "SET queued = :q, running = :r",
        ExpressionAttributeValues: { ":q": 9, ":r": 0 },
      }),
    );

    // Act
    const counted = await store.recount();
    const before = await store.queueCounts(queue);
    const repaired = await store.recount({ fix: true });
    const after = await store.queueCounts(queue);

    // Assess
    expect(counted).toEqual({ [queue]: { queued: 2, running: 1 } });
    expect(before).toEqual({ queued: 9, running: 0 });
    expect(repaired).toEqual({ [queue]: { queued: 2, running: 1 } });
    expect(after).toEqual({ queued: 2, running: 1 });
  });

  it("works with a document client made by the caller", async () => {
    // Prepare
    const client = newClient();
    const store = storeOn(DynamoDBDocumentClient.from(client));
    const r = queued({ input: { deep: [[[{ x: null }]]], s: "" } });

    // Act
    await store.submit(r, null, ROOMY);

    // Assess
    expect(await store.get(r.id)).toEqual(r);
    client.destroy();
  });
});

describe("createTable", () => {
  it("creates every index and TTL, and accepts a table that already exists", async () => {
    // Prepare
    const name = `longrun-boot-${ulid().toLowerCase()}`;

    // Act
    await createTable(admin, name);
    await createTable(admin, name);

    // Assess
    const { Table } = await admin.send(new DescribeTableCommand({ TableName: name }));
    const ttl = await admin.send(new DescribeTimeToLiveCommand({ TableName: name }));
    expect(Table?.TableStatus).toBe("ACTIVE");
    expect(Table?.BillingModeSummary?.BillingMode).toBe("PAY_PER_REQUEST");
    expect((Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName).sort()).toEqual(
      Object.values(INDEXES)
        .map((i) => i.name)
        .sort(),
    );
    expect(ttl.TimeToLiveDescription).toMatchObject({
      TimeToLiveStatus: "ENABLED",
      AttributeName: TTL_ATTRIBUTE,
    });
    await admin.send(new DeleteTableCommand({ TableName: name }));
  });
});

describe("DynamoRequestStore error paths (mocked SDK)", () => {
  function mocked() {
    const doc = DynamoDBDocumentClient.from(new DynamoDBClient({ region: "us-east-1" }));
    const mock = mockClient(doc);
    const store = new DynamoRequestStore({ client: doc, tableName: "t", queues: () => [] });
    return { mock, store };
  }

  function cancelled(codes: string[]): TransactionCanceledException {
    return new TransactionCanceledException({
      message: "Transaction cancelled",
      $metadata: {},
      CancellationReasons: codes.map((Code) => ({ Code })),
    });
  }

  const claim: IdempotencyClaim = { key: "k", bodyHash: "h" };

  it("rethrows a cancelled submit whose reasons it does not understand", async () => {
    // Prepare
    const { mock, store } = mocked();
    const error = cancelled(["None", "ValidationError", "None"]);
    mock.on(TransactWriteCommand).rejects(error);

    // Act
    const submit = store.submit(queued(), claim, ROOMY);

    // Assess
    await expect(submit).rejects.toBe(error);
  });

  it("retries a submit that meets transaction conflicts, then succeeds", async () => {
    // Prepare
    const { mock, store } = mocked();
    mock
      .on(TransactWriteCommand)
      .rejectsOnce(cancelled(["TransactionConflict", "None", "None"]))
      .rejectsOnce(cancelled(["None", "None", "TransactionConflict"]))
      .resolves({});
    mock.on(GetCommand).resolves({ Item: { queued: 1, queued_p0: 1 } });
    const r = queued();

    // Act
    const outcome = await store.submit(r, claim, ROOMY);

    // Assess
    expect(outcome).toMatchObject({ kind: "created", request: r, position: 0 });
    expect(mock.commandCalls(TransactWriteCommand)).toHaveLength(3);
  });

  it("gives up with ConcurrentUpdateError when conflicts never stop", async () => {
    // Prepare
    const { mock, store } = mocked();
    mock.on(TransactWriteCommand).rejects(cancelled(["None", "TransactionConflict"]));

    // Act
    const submit = store.submit(queued(), null, ROOMY);

    // Assess
    await expect(submit).rejects.toBeInstanceOf(ConcurrentUpdateError);
  });

  it("rethrows SDK errors that are not conditional failures", async () => {
    // Prepare
    const { mock, store } = mocked();
    const error = Object.assign(new Error("no such table"), { name: "ResourceNotFoundException" });
    mock.on(GetCommand).rejects(error);
    mock.on(UpdateCommand).rejects(error);

    // Act
    const get = store.get("req_x");
    const update = store.transition({ id: "req_x", from: ["RUNNING"], set: { jobRef: "j" } });

    // Assess
    await expect(get).rejects.toBe(error);
    await expect(update).rejects.toBe(error);
  });

  it("answers null when a field update's condition fails", async () => {
    // Prepare
    const { mock, store } = mocked();
    mock
      .on(UpdateCommand)
      .rejects(Object.assign(new Error("failed"), { name: "ConditionalCheckFailedException" }));

    // Act
    const update = await store.transition({ id: "req_x", from: ["RUNNING"], set: { jobRef: "j" } });

    // Assess
    expect(update).toBeNull();
  });
});
