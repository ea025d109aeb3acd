/**
 * Ports: what the use cases need from the outside world, named for the domain.
 * Adapters (functions/adapters/*) implement them for SQLite + local processes and for AWS.
 */
import type { QueueConfig, RateLimit } from "../config/schema.ts";
import type {
  CapacityReport,
  Progress,
  RequestPatch,
  RequestRecord,
  RequestStatus,
} from "./request.ts";
import type { UploadRecord } from "./upload.ts";

export interface Clock {
  /** epoch milliseconds */
  now(): number;
}

export interface Ids {
  /** A new, sortable, unique request id (`req_<ULID>`). */
  requestId(): string;
  /** A new unique upload id (`upl_<ULID>`); needed only where uploads are served. */
  uploadId?(): string;
}

export interface IdempotencyClaim {
  key: string;
  /** sha256 of the canonical JSON of the submitted body. */
  bodyHash: string;
}

/** A tenant's token bucket as a submit left it (the IETF RateLimit headers show it). */
export interface RateLimitState {
  /** The bucket's policy. */
  policy: RateLimit;
  /** Whole tokens left. */
  remaining: number;
  /** Whole seconds until the bucket is full again. */
  resetSeconds: number;
}

export type SubmitOutcome =
  | {
      kind: "created";
      request: RequestRecord;
      /**
       * The new request's position, when the store knows it from the submit itself (its
       * counters); otherwise the caller asks {@link RequestStore.position}.
       */
      position?: number;
      /** The tenant's bucket after this submit, when the queue has a rate limit. */
      rateLimit?: RateLimitState;
      /** The queue's figures as the submit's own read found them, when it made one. */
      usage?: UsageFigures;
    }
  | { kind: "replayed"; request: RequestRecord; rateLimit?: RateLimitState };

/** What a submit is held to (SPEC §1). */
export interface SubmitLimits {
  /** QUEUED requests of the whole queue. */
  maxQueued: number;
  /** Seconds a `queue_full` answer tells the caller to wait. */
  retryAfterSeconds: number;
  /** QUEUED requests of the request's tenant in the queue (default: `maxQueued`). */
  maxQueuedPerTenant?: number;
  /** The tenant's token bucket in this queue; absent or null: not limited. */
  rateLimit?: RateLimit | null;
}

/** What a claim is held to (SPEC §3). */
export interface ClaimLimits {
  /** STARTING + RUNNING requests of the whole queue. */
  maxRunning: number;
  /** STARTING + RUNNING requests one tenant may hold (default: `maxRunning`). */
  maxRunningOf?: (tenant: string) => number;
}

/**
 * One conditional write. It applies only when the stored request is in one of `from`
 * (all of one status class, so that counter changes are known) and, when given, is at
 * `attempt`. Counters move by the classes of `from` and `to`.
 */
export interface TransitionCommand {
  id: string;
  from: readonly RequestStatus[];
  /** New status; omitted: unchanged (a field update). */
  to?: RequestStatus;
  /** Condition: the stored attempt equals this. */
  attempt?: number;
  /**
   * Condition: the stored cancelRequested equals this. Lets a decision taken on what was read
   * (retry, fail) be refused when a cancel landed in between.
   */
  cancelRequested?: boolean;
  set?: RequestPatch;
}

/**
 * One dispatch pass (RequestStore.claimNext): the dispatcher makes a new one for every
 * pass and gives it to each claim of that pass. Opaque: the store keys what it learnt on it.
 */
export type ClaimPass = object;

export type ClaimResult =
  /** The next request moved QUEUED → STARTING with attempt + 1; it holds a slot. */
  | { kind: "started"; request: RequestRecord }
  /** The next request had outlived its queue TTL and moved QUEUED → EXPIRED. */
  | { kind: "expired"; request: RequestRecord }
  /** Every slot is taken. */
  | { kind: "full" }
  /** Requests wait, but every waiting tenant holds its `maxRunningOf` (SPEC tenant_limit). */
  | { kind: "held" }
  /** Nothing is waiting. */
  | { kind: "empty" };

export interface ListQuery {
  tenant: string;
  queue: string;
  statuses?: readonly RequestStatus[];
  limit: number;
  cursor?: string;
}

export interface ListPage {
  items: RequestRecord[];
  nextCursor: string | null;
}

export interface QueueCounts {
  queued: number;
  running: number;
}

/** What `waitReason` and `estimatedStartAt` are computed from, read together. */
export interface UsageFigures {
  queue: QueueCounts;
  tenant: QueueCounts;
  run: RunStats | null;
}

/** A queue's recent run times: finished requests from their first start to their end. */
export interface RunStats {
  meanMs: number;
  samples: number;
}

/**
 * Durable request state. Every method that changes state is one atomic conditional write
 * (a SQLite transaction, a DynamoDB TransactWriteItems) that keeps the per-queue counters
 * exact. Implementations must be safe under concurrent callers in any number of processes.
 */
export interface RequestStore {
  /**
   * Inserts a QUEUED request, claiming its idempotency key (if any) and counting it against
   * `maxQueued`, all or nothing. A key already held with the same body hash replays the
   * earlier request.
   * @throws IdempotencyConflictError the key is held with another body hash.
   * @throws QueueFullError the queue already holds `maxQueued` QUEUED requests (scope
   *   "queue"), or the tenant `maxQueuedPerTenant` (scope "tenant").
   * @throws RateLimitedError the tenant's bucket is empty (a replay never takes a token).
   */
  submit(
    request: RequestRecord,
    idempotency: IdempotencyClaim | null,
    limits: SubmitLimits,
  ): Promise<SubmitOutcome>;

  get(id: string): Promise<RequestRecord | null>;

  /**
   * Takes the next QUEUED request of `queue` and moves it to STARTING (attempt + 1) while
   * fewer than `maxRunning` are active. The next one (SPEC §3): among the tenants below
   * their `maxRunningOf`, the highest priority waiting; within it, the tenant with the
   * fewest active requests; ties, the oldest request (then the smallest id). A request so
   * chosen whose `expiresAt` has passed is expired instead.
   *
   * `pass` names one dispatch pass: the claims made with the same object may reuse what
   * the earlier claims of that pass read (each claim stays one conditional write, so this
   * never breaks a limit; a stale view can only end the pass early). A store may ignore it.
   */
  claimNext(
    queue: string,
    limits: ClaimLimits,
    now: number,
    pass?: ClaimPass,
  ): Promise<ClaimResult>;

  /** Applies one conditional transition; null when the condition did not hold. */
  transition(cmd: TransitionCommand): Promise<RequestRecord | null>;

  /** Newest first, only `tenant`'s requests; cost bounded by `limit`. */
  list(query: ListQuery): Promise<ListPage>;

  /**
   * How many QUEUED requests of the same queue start before this QUEUED one under the
   * claim rule, if nothing new arrives and every tenant's active count stays as it is but
   * for the starts themselves (store-support.ts fairPositionPlan).
   */
  position(request: RequestRecord): Promise<number>;

  /**
   * {@link position} of each of several QUEUED requests (a list page), counted together:
   * the cost is that of the deepest one, not the sum (store-support.ts positionWalk).
   */
  positions(requests: readonly RequestRecord[]): Promise<Map<string, number>>;

  queueCounts(queue: string): Promise<QueueCounts>;

  /** One tenant's QUEUED and STARTING + RUNNING requests in the queue. */
  tenantCounts(queue: string, tenant: string): Promise<QueueCounts>;

  /**
   * Optional (estimatedStartAt): how long the queue's requests recently held a slot, from a
   * small rolling summary kept with the counters (the last one to two days of finishes);
   * null while there is none. Never a scan of history.
   */
  runStats?(queue: string, now: number): Promise<RunStats | null>;

  /**
   * Optional: {@link queueCounts}, {@link tenantCounts} and {@link runStats} in one read,
   * where the store keeps them together (the DynamoDB counters item).
   */
  usage?(queue: string, tenant: string, now: number): Promise<UsageFigures>;

  /** STARTING and RUNNING requests of every queue (restart recovery, reconciliation). */
  findActive(limit: number): Promise<RequestRecord[]>;

  /** QUEUED requests whose `expiresAt` is at or before `now`. */
  findExpired(now: number, limit: number): Promise<RequestRecord[]>;

  /**
   * Optional: the counters recomputed from the requests themselves, per queue; with `fix`,
   * written back where they differ (and only if unchanged meanwhile).
   */
  recount?(options: { fix?: boolean }): Promise<Record<string, QueueCounts>>;

  /**
   * Optional (retention, where the database has no TTL of its own): ids of the queue's
   * requests that finished before `cutoff`, oldest first.
   */
  findFinishedBefore?(queue: string, cutoff: number, limit: number): Promise<string[]>;
  /** Optional (retention): deletes a finished request and its idempotency key. */
  deleteFinished?(id: string): Promise<boolean>;

  /** Optional (operations metrics): createdAt of the queue's oldest QUEUED request. */
  oldestQueuedAt?(queue: string): Promise<number | null>;
}

/** Wakes the dispatcher of a queue; wake-ups may be coalesced but never lost. */
export interface DispatchTrigger {
  wake(queue: string): Promise<void>;
}

export type StopReason = "cancel" | "timeout" | "shutdown";

/** Runs attempts of requests as jobs (local processes, AWS Batch). */
export interface Compute {
  /**
   * Who retries a failed attempt. "core": the compute reports each attempt's exit and the
   * core starts the next attempt (local processes). "backend": the backend retries on its
   * own (AWS Batch retry strategy) and reports the next attempt's `starting`/`running`
   * events with a higher attempt number; its `exited` failure is final.
   */
  readonly retries: "core" | "backend";
  /**
   * Launches attempt `request.attempt` of `request` under the job contract. Resolves once
   * the job is handed over, with the backend's handle; everything after that arrives as
   * JobEvents.
   */
  start(
    request: RequestRecord,
    queue: QueueConfig,
    options?: LaunchOptions,
  ): Promise<{ jobRef: string }>;
  /** Asks the current attempt to stop: SIGTERM, then SIGKILL after the queue's grace. */
  stop(request: RequestRecord, reason: StopReason): Promise<void>;
  /**
   * Makes sure nothing of an attempt launched by an earlier server process still runs.
   * Resolves with what it found where the backend can tell (see {@link Reaped}).
   */
  reap(request: RequestRecord): Promise<Reaped | undefined>;
  /**
   * Optional: why a STARTING request's job is not running yet, when the backend knows it
   * waits for capacity (embedded: the GPUs it needs are busy); null otherwise.
   */
  capacityWait?(request: RequestRecord): { detail: string } | null;
  /**
   * Optional, for the repair sweep: for each request (all with a jobRef), the JobEvent its
   * job's current state implies (what a missed event would have said), or null when the
   * backend does not know the job. Requests left out of the map are not known yet.
   */
  inspect?(requests: readonly RequestRecord[]): Promise<ReadonlyMap<string, JobEvent | null>>;
}

/** What {@link Compute.reap} found of an earlier server's attempt. */
export interface Reaped {
  /**
   * When the job it stopped had started (epoch ms): it was still running, outliving the
   * server that ran it. null when nothing of the attempt was still running (or the start
   * is unknown): it ended with its server.
   */
  runningSince: number | null;
}

/** What the caller of {@link Compute.start} knows about the launch. */
export interface LaunchOptions {
  /**
   * The request was claimed from QUEUED by this very caller: this is its first launch, no
   * job of it was ever created, so a backend that looks for an earlier launch before it
   * creates a job (to stay idempotent across crashes) may skip the lookup.
   */
  firstLaunch?: boolean;
}

export type JobEvent =
  /** The backend is starting this attempt (AWS Batch RUNNABLE/STARTING, a retry included). */
  | {
      type: "starting";
      requestId: string;
      attempt: number;
      at: number;
      jobRef?: string;
      /** Whether the job waits for an instance, where the backend says (SPEC `no_capacity`). */
      capacity?: CapacityReport;
    }
  | { type: "running"; requestId: string; attempt: number; at: number; jobRef?: string }
  | {
      type: "progress";
      requestId: string;
      attempt: number;
      at: number;
      progress: Omit<Progress, "updatedAt">;
    }
  | {
      type: "exited";
      requestId: string;
      attempt: number;
      at: number;
      /**
       * `lost`: the platform ended the attempt, not the job (a Spot interruption, a host
       * that went away); it is retried without counting against `maxAttempts` (SPEC §3).
       */
      outcome: "succeeded" | "failed" | "timeout" | "lost";
      message?: string;
      /**
       * The job that ended. With a backend that retries, a job stopped between two of its
       * attempts reports the previous attempt's number; its job reference still says it is
       * the current job, and its end is final.
       */
      jobRef?: string;
      /** When this attempt's job began to run, if the backend reports it (metrics). */
      startedAt?: number;
    };

export interface Artifact {
  name: string;
  size: number;
  url: string;
}

/** Where a finished attempt's outputs live. */
export interface ResultStore {
  /** `output` is result.json parsed (null if absent); artifacts are every other file. */
  getResult(requestId: string): Promise<{ output: unknown; artifacts: Artifact[] }>;
}

export interface LogPage {
  lines: string[];
  nextCursor: string;
}

/** The jobs' stdout and stderr, all attempts, oldest first. */
export interface LogStore {
  read(requestId: string, cursor: string | undefined, limit: number): Promise<LogPage>;
}

/** Checks a webhook target at submit; throws InvalidRequestError when it is refused. */
export type WebhookGuard = (url: string) => Promise<void>;

/**
 * Upload records (SPEC §2 "Uploads"). Each method is one single-item write or read, O(1)
 * whatever the number of uploads. An upload whose `expiresAt` has passed reads as absent
 * even before it is deleted (DynamoDB TTL deletes late; the embedded sweep runs hourly).
 */
export interface UploadStore {
  /** Inserts a new PENDING upload; the id is fresh, so this never overwrites. */
  create(upload: UploadRecord): Promise<void>;
  /** The upload, or null when there is none (or it has expired) at `now`. */
  get(id: string, now: number): Promise<UploadRecord | null>;
  /**
   * PENDING → READY, one conditional write; the READY upload, or null when there is no
   * such upload. Marking a READY upload again returns it unchanged.
   */
  markReady(id: string, now: number): Promise<UploadRecord | null>;
  /** Optional (retention, where the database has no TTL): ids expired at `now`, oldest first. */
  findExpired?(now: number, limit: number): Promise<string[]>;
  /** Optional (retention): deletes the record; false when it was gone. */
  delete?(id: string): Promise<boolean>;
}

/** Where and how a caller PUTs an upload's bytes (the `url` and `headers` of SPEC §2). */
export interface UploadTarget {
  url: string;
  /** Headers the PUT must carry (they are part of the signature). */
  headers: Record<string, string>;
  /** Epoch ms after which the URL is refused. */
  expiresAt: number;
}

/**
 * The bytes behind uploads and request files, and checkpoints handed from one request to
 * its retry (S3 on AWS, the data directory embedded). Copies are made by the storage
 * itself (S3 CopyObject, a hard link): the bytes never pass through the caller.
 */
export interface FileStore {
  /** A signed PUT for the upload's bytes, valid until `expiresAt` (epoch ms). */
  uploadTarget(upload: UploadRecord, expiresAt: number): Promise<UploadTarget>;
  /** Size of the upload's stored bytes; null when nothing has arrived. */
  uploadedSize(upload: UploadRecord): Promise<number | null>;
  /**
   * Makes the request's own copy `name` of a READY upload's bytes.
   * @throws InvalidRequestError (field `files.<name>`) when the bytes are gone or are not
   *   `upload.size` long (a concurrent expiry): the request must not be written then.
   */
  attachUpload(requestId: string, name: string, upload: UploadRecord): Promise<void>;
  /** Copies the files `names` of request `from` to request `to` (a retry keeps its own). */
  copyRequestFiles(from: string, to: string, names: readonly string[]): Promise<void>;
  /** Deletes every file of a request (a submit that was not written; retention). Idempotent. */
  deleteRequestFiles(requestId: string): Promise<void>;
  /**
   * Copies the last saved checkpoint of request `from` to request `to` (which has none), so
   * the first attempt of `to` starts from it; `from` stays as it was.
   * @returns false when `from` has no checkpoint.
   */
  copyCheckpoint(from: string, to: string): Promise<boolean>;
  /** Deletes the checkpoint of a request that was not written. Idempotent. */
  deleteCheckpoint(requestId: string): Promise<void>;
}
