/**
 * The layout of the items in the request table (definitions.ts names the table's keys and
 * indexes; this module names what goes in them). Every writer of these items builds keys
 * here: the request store, the webhook secrets, the Batch job runner, the CDK grants (their
 * `dynamodb:LeadingKeys` conditions) and the bench. A second spelling of a key or of the
 * `rev` rule would let a writer miss the store's conditions.
 *
 *   request      pk = REQ#<id>                sk = REQ
 *   idempotency  pk = IDEM#<escaped tenant>#<key>  sk = IDEM
 *   counters     pk = QUEUE#<queue>           sk = COUNTERS   (queued, running)
 *   webhook key  pk = WHSEC#<escaped tenant>  sk = WHSEC      (the tenant's signing secret)
 *   webhook order pk = WHORD#<request id>     sk = WHORD      (order of a request's deliveries)
 *   upload       pk = UPL#<id>                sk = UPL        (`ttl` at expiry)
 *   seq pointer  pk = SEQ#<queue>#<escaped tenant>#<priority>#<seq>  sk = SEQ
 *                (`requestId`, `readyKey`; which request holds a place in its tenant's
 *                submit sequence at a priority, for O(1) positions; `ttl` past its expiry)
 */
import { ACTIVE_STATUSES, type CapacityWait, type RequestStatus } from "../../core/request.ts";
import { TABLE_KEY } from "./definitions.ts";

/** `pk` prefix and `sk` of each item kind. */
export const ITEM_KIND = {
  request: { pkPrefix: "REQ#", sk: "REQ" },
  idempotency: { pkPrefix: "IDEM#", sk: "IDEM" },
  counters: { pkPrefix: "QUEUE#", sk: "COUNTERS" },
  webhookSecret: { pkPrefix: "WHSEC#", sk: "WHSEC" },
  webhookOrder: { pkPrefix: "WHORD#", sk: "WHORD" },
  upload: { pkPrefix: "UPL#", sk: "UPL" },
  seqPointer: { pkPrefix: "SEQ#", sk: "SEQ" },
} as const;

/** A table key: `pk` and `sk`. */
export type ItemKey = Record<string, string>;

/**
 * A tenant as a key segment. A tenant may hold `#` (a JWT `sub` can), and so may what
 * follows it in a key, so `%` and `#` are escaped: otherwise tenant "a#b" with idempotency
 * key "c" and tenant "a" with key "b#c" would share one item.
 */
export function escapeTenant(tenant: string): string {
  return tenant.replaceAll("%", "%25").replaceAll("#", "%23");
}

/** The tenant of a key segment {@link escapeTenant} made. */
export function unescapeTenant(escaped: string): string {
  return escaped.replaceAll("%23", "#").replaceAll("%25", "%");
}

/** `pk` of a request item. */
export function requestPk(id: string): string {
  return `${ITEM_KIND.request.pkPrefix}${id}`;
}

/** Key of a request item. */
export function requestKey(id: string): ItemKey {
  return { [TABLE_KEY.partitionKey]: requestPk(id), [TABLE_KEY.sortKey]: ITEM_KIND.request.sk };
}

/** The request id of a request item's `pk`. */
export function requestIdOfPk(pk: string): string {
  return pk.slice(ITEM_KIND.request.pkPrefix.length);
}

/** `pk` of the idempotency item of a tenant's key (the request item keeps it as `idemPk`). */
export function idemPk(tenant: string, key: string): string {
  return `${ITEM_KIND.idempotency.pkPrefix}${escapeTenant(tenant)}#${key}`;
}

/** Key of an idempotency item by its `pk`. */
export function idemKeyOfPk(pk: string): ItemKey {
  return { [TABLE_KEY.partitionKey]: pk, [TABLE_KEY.sortKey]: ITEM_KIND.idempotency.sk };
}

/** Key of the idempotency item of a tenant's key. */
export function idemKey(tenant: string, key: string): ItemKey {
  return idemKeyOfPk(idemPk(tenant, key));
}

/** Key of a queue's counters item. */
export function countersKey(queue: string): ItemKey {
  return {
    [TABLE_KEY.partitionKey]: `${ITEM_KIND.counters.pkPrefix}${queue}`,
    [TABLE_KEY.sortKey]: ITEM_KIND.counters.sk,
  };
}

/** Key of the order record of a request's webhook deliveries (functions/webhooks/order.ts). */
export function webhookOrderKey(requestId: string): ItemKey {
  return {
    [TABLE_KEY.partitionKey]: `${ITEM_KIND.webhookOrder.pkPrefix}${requestId}`,
    [TABLE_KEY.sortKey]: ITEM_KIND.webhookOrder.sk,
  };
}

/** Key of a tenant's webhook signing secret. */
export function webhookSecretKey(tenant: string): ItemKey {
  return {
    [TABLE_KEY.partitionKey]: `${ITEM_KIND.webhookSecret.pkPrefix}${escapeTenant(tenant)}`,
    [TABLE_KEY.sortKey]: ITEM_KIND.webhookSecret.sk,
  };
}

/** Key of an upload item. */
export function uploadKey(id: string): ItemKey {
  return {
    [TABLE_KEY.partitionKey]: `${ITEM_KIND.upload.pkPrefix}${id}`,
    [TABLE_KEY.sortKey]: ITEM_KIND.upload.sk,
  };
}

/**
 * Key of the pointer from a place in a tenant's submit sequence at one priority of a queue
 * (the request item's `seq`) to the request that took it. Written once, in the submit's
 * own transaction, and never changed: a position reads it to learn how old the request at
 * a given place is without reading the index up to it (docs/design.md, "Positions in O(1)").
 */
export function seqPointerKey(
  queue: string,
  tenant: string,
  priority: number,
  seq: number,
): ItemKey {
  return {
    [TABLE_KEY.partitionKey]: `${ITEM_KIND.seqPointer.pkPrefix}${queue}#${escapeTenant(tenant)}#${priority}#${seq}`,
    [TABLE_KEY.sortKey]: ITEM_KIND.seqPointer.sk,
  };
}

/**
 * The attributes of a request item the writers condition on (the store keeps every field of
 * RequestRecord besides, plus the index keys).
 *
 * The `rev` rule: every write of a request item, by any writer, adds 1 to `rev`. The store
 * reads an item, decides, and writes conditioned on the `rev` it read (claims and
 * transactional transitions), so a write that skipped the bump could slip between its read
 * and its write unseen.
 */
export interface RequestItem extends Record<string, unknown> {
  id: string;
  tenant: string;
  queue: string;
  status: RequestStatus;
  priority: number;
  createdAt: number;
  expiresAt: number;
  finishedAt?: number | null;
  attempt: number;
  queueTtlSeconds: number;
  /** Bumped by every write (see the `rev` rule above). */
  rev: number;
  /** Key of the idempotency item claimed with this request, if any. */
  idemPk?: string;
  /**
   * The current attempt's wait for an instance (request.ts CapacityWait: attempt, since,
   * reason, endedAt), a map written by the Batch events handler and the sweep with one
   * UpdateItem conditioned on status STARTING and the attempt; absent on most items.
   */
  capacityWait?: CapacityWait | null;
  /**
   * Its place in the submit sequence of its tenant at its priority in its queue (0-based),
   * stamped by the submit's transaction from the counters item's `ti<p>#<tenant>`. Absent
   * on items written before sequences existed: their positions are counted on the index.
   */
  seq?: number;
  /**
   * Set when the submit was dated no later than a request placed before it in the same
   * sequence (clock skew, one millisecond): such a request starts out of place order, so it
   * is counted on the counters item until it leaves QUEUED, and whoever moves it out
   * records its place there.
   */
  seqLate?: boolean;
}

/** Name of the `rev` attribute, for writers building their own expressions. */
export const REV_ATTRIBUTE = "rev" satisfies keyof RequestItem;

/** Name of the attribute that keeps a job's wait for an instance (SPEC `no_capacity`). */
export const CAPACITY_WAIT_ATTRIBUTE = "capacityWait" satisfies keyof RequestItem;

/** A running job's report: a heartbeat, and new progress when there is some. */
export interface ProgressUpdate {
  requestId: string;
  attempt: number;
  /** Epoch ms of this write; stored as the item's heartbeat. */
  heartbeatAt: number;
  /** New progress (`updatedAt` epoch ms); absent for a heartbeat alone. */
  progress?: { current: number; total: number | null; message: string | null; updatedAt: number };
}

/**
 * The UpdateItem (document-client form) of a progress report or heartbeat: applied only
 * while the request is STARTING or RUNNING at this attempt, so a late write of an old
 * attempt or of a finished request changes nothing; bumps `rev` as every write does.
 */
export function progressUpdateInput(
  tableName: string,
  update: ProgressUpdate,
): {
  TableName: string;
  Key: ItemKey;
  UpdateExpression: string;
  ConditionExpression: string;
  ExpressionAttributeNames: Record<string, string>;
  ExpressionAttributeValues: Record<string, unknown>;
} {
  const [starting, running] = ACTIVE_STATUSES;
  const sets = ["#heartbeatAt = :heartbeatAt"];
  const names: Record<string, string> = {
    "#heartbeatAt": "heartbeatAt",
    "#status": "status" satisfies keyof RequestItem,
    "#attempt": "attempt" satisfies keyof RequestItem,
    "#rev": REV_ATTRIBUTE,
  };
  const values: Record<string, unknown> = {
    ":heartbeatAt": update.heartbeatAt,
    ":attempt": update.attempt,
    ":starting": starting,
    ":running": running,
    ":one": 1,
  };
  if (update.progress) {
    sets.push("#progress = :progress");
    names["#progress"] = "progress";
    values[":progress"] = update.progress;
  }
  return {
    TableName: tableName,
    Key: requestKey(update.requestId),
    UpdateExpression: `SET ${sets.join(", ")} ADD #rev :one`,
    ConditionExpression: "#status IN (:starting, :running) AND #attempt = :attempt",
    ExpressionAttributeNames: names,
    ExpressionAttributeValues: values,
  };
}
