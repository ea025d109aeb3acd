/**
 * The one definition of longrun's AWS data resources: key schema and indexes of the
 * DynamoDB table, the SQS queues. The CDK constructs (infra/) and the runtime bootstrap
 * (LONGRUN_AWS_BOOTSTRAP=1) both build from these, so they are never written twice.
 *
 * Single table: request, idempotency, counters and webhook-secret, webhook order (functions/webhooks/order.ts) and upload items, whose keys and
 * request-item rules live in items.ts beside this module.
 */

export const TABLE_KEY = { partitionKey: "pk", sortKey: "sk" } as const;
/**
 * The table's stream: every write with the item before and after it. Webhook deliveries are
 * derived from request items' old and new images (functions/adapters/aws/stream-webhooks.ts).
 */
export const TABLE_STREAM_VIEW = "NEW_AND_OLD_IMAGES";

/**
 * The event-source mapping from the stream to the webhooks handler: a failing batch is split
 * in halves to isolate the record that fails, retried, and then recorded on its on-failure
 * queue. Records stay in the stream 24 h, so retries never outlast them.
 */
export const WEBHOOKS_STREAM = {
  batchSize: 100,
  maxBatchingWindowSeconds: 1,
  retryAttempts: 10,
  bisectBatchOnError: true,
  /** Only request items make webhooks; counters, keys and secrets are filtered out. */
  partitionKeyPrefix: "REQ#",
} as const;

/** Attribute holding the epoch-seconds expiry DynamoDB TTL deletes on. */
export const TTL_ATTRIBUTE = "ttl";

export interface IndexDefinition {
  name: string;
  partitionKey: string;
  sortKey: string;
  /** Projected non-key attributes; undefined means ALL. */
  projection: "ALL" | "KEYS_ONLY";
  purpose: string;
}

/** Global secondary indexes; every one is sparse (only items holding its keys appear). */
export const INDEXES = {
  /** QUEUED requests of a queue in start order: `<9-priority>#<createdAt>#<id>`. */
  ready: {
    name: "ready",
    partitionKey: "readyPk",
    sortKey: "readySk",
    projection: "KEYS_ONLY",
    purpose: "dispatch order and position while QUEUED",
  },
  /** A tenant's requests of a queue, newest first by `<createdAt>#<id>`. */
  list: {
    name: "list",
    partitionKey: "listPk",
    sortKey: "listSk",
    projection: "ALL",
    purpose: "list without a status filter",
  },
  /** The same, per status: `<tenant>#<queue>#<status>`. */
  listByStatus: {
    name: "listByStatus",
    partitionKey: "statusPk",
    sortKey: "listSk",
    projection: "ALL",
    purpose: "list with a status filter",
  },
  /**
   * Requests the sweep must look at: QUEUED by expiry (`QUEUED#<queue>`, sk expiresAt) and
   * STARTING/RUNNING (`ACTIVE#<queue>`, sk createdAt). Terminal requests leave it.
   */
  sweep: {
    name: "sweep",
    partitionKey: "sweepPk",
    sortKey: "sweepSk",
    projection: "KEYS_ONLY",
    purpose: "TTL expiry and in-flight reconciliation",
  },
} as const satisfies Record<string, IndexDefinition>;

/** The dispatch queue is FIFO with one message group per longrun queue. */
export const DISPATCH_QUEUE = {
  fifo: true,
  /** Wake-ups carry no payload worth keeping apart: identical bodies collapse in 5 min windows. */
  contentBasedDeduplication: false,
  visibilityTimeoutSeconds: 120,
  maxReceiveCount: 5,
} as const;

/** Batch job state-change events, delivered by an EventBridge rule. */
export const EVENTS_QUEUE = {
  fifo: false,
  visibilityTimeoutSeconds: 120,
  maxReceiveCount: 5,
} as const;

/**
 * Webhook deliveries (standard queue: at-least-once, duplicates carry the same webhook-id).
 * Visibility above the 10 s delivery timeout plus DNS and the re-send; a record the handler
 * fails (a delivery given up, or an error of the handler itself) is received again after it
 * and dead-lettered after `maxReceiveCount` receives.
 */
export const WEBHOOKS_QUEUE = {
  fifo: false,
  visibilityTimeoutSeconds: 60,
  maxReceiveCount: 3,
} as const;

/** S3 key prefixes, one per kind of object (lifecycle rules and job-role grants use them). */
export const S3_PREFIX = {
  inputs: "inputs/",
  outputs: "outputs/",
  checkpoints: "checkpoints/",
  logs: "logs/",
  /** Uploads' bytes, `uploads/<tenant>/<id>`; a lifecycle rule deletes them after a day. */
  uploads: "uploads/",
} as const;

/** The S3 objects of one request: its input, and the folders of each kind under its prefix. */
export interface RequestObjects {
  /** The input document (one object). */
  input: string;
  /** Folders, each ending in `/`. */
  checkpoints: string;
  outputs: string;
  logs: string;
}

/**
 * Where one request's objects live. The S3 storage builds its keys from this, and so do the
 * grants that scope a job to its own request (with an IAM policy variable as the id).
 */
export function requestObjects(requestId: string): RequestObjects {
  return {
    input: `${S3_PREFIX.inputs}${requestId}.json`,
    checkpoints: `${S3_PREFIX.checkpoints}${requestId}/`,
    outputs: `${S3_PREFIX.outputs}${requestId}/`,
    logs: `${S3_PREFIX.logs}${requestId}/`,
  };
}

/**
 * The session tag a job's credentials carry: the request it may touch. The per-queue
 * scoped role's policies resolve `${aws:PrincipalTag/<this>}` to it, and its trust policy
 * refuses a session without it (infra/constructs/job-definitions.ts).
 */
export const REQUEST_SESSION_TAG = "longrun-request";

/** Names the embedded server and tests give resources when they create them themselves. */
export interface ResourceNames {
  tableName: string;
  dispatchQueueName: string;
  eventsQueueName: string;
  webhooksQueueName: string;
  bucketName: string;
}

export function resourceNames(prefix: string): ResourceNames {
  return {
    tableName: `${prefix}-requests`,
    dispatchQueueName: `${prefix}-dispatch.fifo`,
    eventsQueueName: `${prefix}-batch-events`,
    webhooksQueueName: `${prefix}-webhooks`,
    bucketName: `${prefix}-data`.toLowerCase(),
  };
}
