/**
 * The SQLite webhook outbox: durability across close and SIGKILL, leases, dedup keys,
 * per-request order, progress superseding, secrets, and query plans that never scan.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  SqliteWebhookOutbox,
  WEBHOOK_EXPLAINABLE,
} from "../../../functions/adapters/embedded/sqlite-webhooks.ts";
import {
  type NewWebhookDelivery,
  ROTATION_OVERLAP_MS,
} from "../../../functions/webhooks/outbox.ts";

const T = 1_800_000_000_000;
let dir: string;
let path: string;
const opened: SqliteWebhookOutbox[] = [];
function open(): SqliteWebhookOutbox {
  const o = new SqliteWebhookOutbox(path);
  opened.push(o);
  return o;
}
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "longrun-webhooks-"));
  path = join(dir, "webhooks.db");
});
afterEach(() => {
  for (const o of opened.splice(0)) {
    try {
      o.close();
    } catch {
      // already closed by the test
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
function delivery(over: Partial<NewWebhookDelivery> = {}): NewWebhookDelivery {
  n++;
  const requestId = over.requestId ?? `req_${n}`;
  const event = over.event ?? "completed";
  return {
    id: `msg_${n}`,
    requestId,
    tenant: "alice",
    event,
    url: "https://hooks.example/x",
    payload: `{"n":${n}}`,
    dedupKey: `${requestId}:${event}:${n}`,
    createdAt: T,
    ...over,
  };
}

describe("SqliteWebhookOutbox", () => {
  it("keeps pending deliveries across close and reopen", async () => {
    const a = open();
    const d = delivery();
    expect(await a.enqueue(d)).toBe(true);
    a.close();
    const b = open();
    expect(b.get(d.id)).toMatchObject({ status: "pending", attempts: 0, payload: d.payload });
    const claimed = await b.claimDue(T, 10, 1000);
    expect(claimed).toEqual([{ ...d, attempts: 0, lastError: null }]);
  });

  it("keeps deliveries of a SIGKILLed process, its lease re-claimable when it ends", async () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(here, "kill-child.ts"), path, String(T)],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const line = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout.on("data", (c: Buffer) => {
        out += c.toString();
        if (out.includes("\n")) resolve(out.trim());
      });
      child.once("exit", (code) => reject(new Error(`child exited early: ${code}`)));
    });
    expect(line).toBe("ready msg_a");
    const exited = new Promise((r) => child.once("exit", (_c, signal) => r(signal)));
    child.kill("SIGKILL");
    expect(await exited).toBe("SIGKILL");

    const o = open();
    expect(o.get("msg_a")).toMatchObject({ status: "pending", leaseUntil: T + 30_000 });
    expect(o.get("msg_b")).toMatchObject({ status: "pending", leaseUntil: null });
    // during the dead worker's lease only the other one is due
    expect((await o.claimDue(T + 1000, 10, 60_000)).map((d) => d.id)).toEqual(["msg_b"]);
    expect(await o.claimDue(T + 29_999, 10, 5000)).toEqual([]);
    expect((await o.claimDue(T + 30_000, 10, 5000)).map((d) => d.id)).toEqual(["msg_a"]);
  });

  it("leases: a claimed delivery is not handed out again until its lease ends", async () => {
    const o = open();
    const d = delivery();
    await o.enqueue(d);
    expect(await o.claimDue(T, 10, 10_000)).toHaveLength(1);
    expect(await o.claimDue(T + 9_999, 10, 10_000)).toEqual([]);
    // a second connection to the same file sees the same lease
    const other = open();
    expect(await other.claimDue(T + 9_999, 10, 10_000)).toEqual([]);
    expect((await other.claimDue(T + 10_000, 10, 10_000)).map((x) => x.id)).toEqual([d.id]);
  });

  it("is due only from next_attempt_at; reschedule, complete and markDead count tries", async () => {
    const o = open();
    const d = delivery();
    await o.enqueue(d);
    await o.claimDue(T, 1, 1000);
    await o.reschedule(d.id, T + 5000, "HTTP 500");
    expect(o.get(d.id)).toMatchObject({ attempts: 1, lastError: "HTTP 500", leaseUntil: null });
    expect(await o.claimDue(T + 4999, 10, 1000)).toEqual([]);
    const [again] = await o.claimDue(T + 5000, 10, 1000);
    expect(again).toMatchObject({ id: d.id, attempts: 1, lastError: "HTTP 500" });
    await o.complete(d.id, { status: 204, at: T + 5100 });
    expect(o.get(d.id)).toMatchObject({
      status: "delivered",
      attempts: 2,
      lastStatus: 204,
      deliveredAt: T + 5100,
    });
    expect(await o.claimDue(T + 999_999, 10, 1000)).toEqual([]);

    const e = delivery();
    await o.enqueue(e);
    await o.claimDue(T, 10, 1000);
    await o.markDead(e.id, "no answer");
    expect(o.get(e.id)).toMatchObject({ status: "dead", attempts: 1, lastError: "no answer" });
    // dead is final: a late reschedule does not revive it
    await o.reschedule(e.id, T, "late");
    expect(o.get(e.id)).toMatchObject({ status: "dead", attempts: 1 });
  });

  it("refuses a second delivery with the same dedup key", async () => {
    const o = open();
    const first = delivery({ dedupKey: "req_x:completed", requestId: "req_x" });
    expect(await o.enqueue(first)).toBe(true);
    expect(await o.enqueue(delivery({ dedupKey: "req_x:completed", requestId: "req_x" }))).toBe(
      false,
    );
    expect(o.deliveriesOf("req_x").map((d) => d.id)).toEqual([first.id]);
    expect(o.get(first.id)!.payload).toBe(first.payload);
  });

  it("hands out one delivery per request at a time, oldest first", async () => {
    const o = open();
    const started = delivery({ requestId: "req_o", event: "started" });
    const completed = delivery({ requestId: "req_o", event: "completed" });
    const other = delivery({ requestId: "req_p" });
    for (const d of [started, completed, other]) await o.enqueue(d);
    expect((await o.claimDue(T, 10, 1000)).map((d) => d.id)).toEqual([started.id, other.id]);
    await o.complete(other.id, { status: 200, at: T });
    // while started is retried, completed waits even though it is due
    await o.reschedule(started.id, T + 5000, "HTTP 500");
    expect(await o.claimDue(T + 2000, 10, 1000)).toEqual([]);
    expect((await o.claimDue(T + 5000, 10, 1000)).map((d) => d.id)).toEqual([started.id]);
    await o.complete(started.id, { status: 200, at: T + 5000 });
    expect((await o.claimDue(T + 5000, 10, 1000)).map((d) => d.id)).toEqual([completed.id]);
  });

  it("coalesces progress: same second replaces, a newer one supersedes the waiting older", async () => {
    const o = open();
    const p = (sec: number, payload: string, at = T + sec * 1000) =>
      delivery({
        requestId: "req_g",
        event: "progress",
        dedupKey: `req_g:progress:${Math.floor(at / 1000)}`,
        payload,
        createdAt: at,
      });
    const first = p(0, '{"current":1}');
    expect(await o.enqueue(first)).toBe(true);
    expect(await o.enqueue(p(0, '{"current":2}', T + 400))).toBe(false);
    expect(o.get(first.id)!.payload).toBe('{"current":2}');
    const second = p(1, '{"current":3}');
    expect(await o.enqueue(second)).toBe(true);
    expect(o.get(first.id)!.status).toBe("superseded");
    // a progress being tried is not superseded, and its second's later updates are dropped
    const [leased] = await o.claimDue(T + 1000, 10, 5000);
    expect(leased!.id).toBe(second.id);
    expect(await o.enqueue(p(1, '{"current":4}', T + 1500))).toBe(false);
    expect(o.get(second.id)!.payload).toBe('{"current":3}');
    const third = p(2, '{"current":5}');
    await o.enqueue(third);
    expect(o.get(second.id)!.status).toBe("pending");
    await o.complete(second.id, { status: 200, at: T + 2000 });
    // completed supersedes the waiting progress
    const done = delivery({ requestId: "req_g", event: "completed", createdAt: T + 2500 });
    await o.enqueue(done);
    expect(o.deliveriesOf("req_g").map((d) => [d.id, d.status])).toEqual([
      [first.id, "superseded"],
      [second.id, "delivered"],
      [third.id, "superseded"],
      [done.id, "pending"],
    ]);
    expect((await o.claimDue(T + 3000, 10, 1000)).map((d) => d.id)).toEqual([done.id]);
  });

  it("creates a tenant's secret once and keeps it across reopen", async () => {
    const a = open();
    const s = await a.secretFor("alice");
    expect(s).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(await a.secretFor("alice")).toBe(s);
    const bob = await a.secretFor("bob");
    expect(bob).not.toBe(s);
    a.close();
    const b = open();
    expect(await b.secretFor("alice")).toBe(s);
    expect(await b.secretFor("bob")).toBe(bob);
  });

  it("rotates a tenant's secret: both sign for 24 hours, across reopen", async () => {
    const a = open();
    const old = await a.secretFor("alice");
    const bob = await a.secretFor("bob");
    const fresh = await a.rotate("alice", T);
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(old);
    expect(await a.secretFor("alice")).toBe(fresh);
    a.close();
    const b = open();
    expect(await b.signingSecretsFor("alice", T + ROTATION_OVERLAP_MS - 1)).toEqual([fresh, old]);
    expect(await b.signingSecretsFor("alice", T + ROTATION_OVERLAP_MS)).toEqual([fresh]);
    expect(await b.signingSecretsFor("bob", T)).toEqual([bob]);
    // A rotation of a tenant never seen before makes its first secret.
    const carol = await b.rotate("carol", T);
    expect(await b.signingSecretsFor("carol", T)).toEqual([carol]);
  });

  it("opens a file made before rotation existed, keeping its secrets", async () => {
    const db = new Database(path);
    db.exec(
      "CREATE TABLE webhook_secrets (tenant TEXT PRIMARY KEY, secret TEXT NOT NULL, created_at INTEGER NOT NULL)",
    );
    db.prepare("INSERT INTO webhook_secrets VALUES ('alice', 'whsec_AAAA', 1)").run();
    db.close();
    const o = open();
    expect(await o.signingSecretsFor("alice", T)).toEqual(["whsec_AAAA"]);
    const fresh = await o.rotate("alice", T);
    expect(await o.signingSecretsFor("alice", T)).toEqual([fresh, "whsec_AAAA"]);
  });

  it("purges finished deliveries only", async () => {
    const o = open();
    const done = delivery({ createdAt: T });
    const waiting = delivery({ createdAt: T });
    await o.enqueue(done);
    await o.enqueue(waiting);
    await o.claimDue(T, 1, 1000);
    await o.complete(done.id, { status: 200, at: T });
    expect(o.purgeFinished(T + 1)).toBe(1);
    expect(o.get(done.id)).toBeNull();
    expect(o.get(waiting.id)).not.toBeNull();
  });

  it("never scans the table in claimDue, superseding, dedup or purge", () => {
    const o = open();
    for (const name of WEBHOOK_EXPLAINABLE) {
      const plan = o.explain(name).join(" | ");
      expect(plan, name).not.toMatch(/\bSCAN\b/);
      expect(plan, name).toMatch(/USING (COVERING )?INDEX|USING INTEGER PRIMARY KEY/);
    }
    expect(o.explain("due").join(" | ")).toMatch(/webhook_deliveries_due/);
    expect(o.explain("due").join(" | ")).toMatch(/webhook_deliveries_request/);
  });
});
