/**
 * Child process of the outbox durability test: opens the outbox at argv[2], enqueues two
 * deliveries, leases one of them as a worker would, reports "ready" and waits to be killed.
 */
import { SqliteWebhookOutbox } from "../../../functions/adapters/embedded/sqlite-webhooks.ts";

const path = process.argv[2];
const now = Number(process.argv[3]);
if (!path || !Number.isFinite(now)) throw new Error("usage: kill-child.ts <db> <now>");
const outbox = new SqliteWebhookOutbox(path);
for (const [id, requestId] of [
  ["msg_a", "req_a"],
  ["msg_b", "req_b"],
] as const) {
  await outbox.enqueue({
    id,
    requestId,
    tenant: "alice",
    event: "completed",
    url: "https://hooks.example/",
    payload: `{"id":"${requestId}"}`,
    dedupKey: `${requestId}:completed`,
    createdAt: now,
  });
}
const leased = await outbox.claimDue(now, 1, 30_000);
process.stdout.write(`ready ${leased.map((d) => d.id).join(",")}\n`);
setInterval(() => {}, 1000);
