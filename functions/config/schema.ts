import { z } from "zod";

/** Queue names as SPEC §1 allows them. */
export const QUEUE_NAME_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;

const envName = /^[A-Za-z_][A-Za-z0-9_]*$/;

export const ResourcesSchema = z
  .object({
    gpus: z.number().int().min(0).max(16).default(0),
    vcpus: z.number().int().min(1).max(256).default(1),
    memoryMiB: z.number().int().min(128).max(2_000_000).default(2048),
  })
  .strict();

/** A token bucket (SPEC §1 `rateLimit`): `burst` tokens, refilled at `requestsPerSecond`. */
export const RateLimitSchema = z
  .object({
    requestsPerSecond: z.number().positive().max(100_000),
    burst: z.number().int().min(1).max(1_000_000),
  })
  .strict();

/** Per-tenant overrides of a queue's sharing limits (SPEC §1 `tenants`). */
export const TenantOverrideSchema = z
  .object({
    maxRunning: z.number().int().min(1).max(10_000).optional(),
    maxQueued: z.number().int().min(1).max(10_000_000).optional(),
    rateLimit: RateLimitSchema.optional(),
  })
  .strict();

/** One queue of `longrun.config.json`; every field but `command` has a default. */
export const QueueConfigSchema = z
  .object({
    command: z.array(z.string().min(1)).min(1),
    image: z.string().min(1).optional(),
    maxQueued: z.number().int().min(1).max(10_000_000).default(1000),
    maxRunning: z.number().int().min(1).max(10_000).default(1),
    defaultPriority: z.number().int().min(0).max(9).default(0),
    timeoutSeconds: z
      .number()
      .int()
      .min(1)
      .max(14 * 86_400)
      .default(3600),
    maxAttempts: z.number().int().min(1).max(10).default(3),
    queueTtlSeconds: z
      .number()
      .int()
      .min(1)
      .max(365 * 86_400)
      .default(86_400),
    cancelGraceSeconds: z.number().int().min(0).max(3600).default(30),
    retentionDays: z.number().int().min(1).max(3650).default(30),
    resources: ResourcesSchema.default({ gpus: 0, vcpus: 1, memoryMiB: 2048 }),
    env: z
      .record(
        z.string().regex(envName, "environment variable names are [A-Za-z_][A-Za-z0-9_]*"),
        z.string(),
      )
      .default({}),
    /** Default: `maxRunning`. */
    maxRunningPerTenant: z.number().int().min(1).max(10_000).optional(),
    /** Default: `maxQueued`. */
    maxQueuedPerTenant: z.number().int().min(1).max(10_000_000).optional(),
    rateLimit: RateLimitSchema.optional(),
    /** Overrides by tenant name; optional so that a queue written out by hand needs none. */
    tenants: z.record(z.string().min(1).max(256), TenantOverrideSchema).optional(),
  })
  .strict()
  .superRefine((q, ctx) => {
    // A per-tenant limit above the queue's own could never be reached: say so at start
    // rather than let a reader believe it is in force.
    const check = (value: number | undefined, max: number, path: PropertyKey[], of: string) => {
      if (value !== undefined && value > max) {
        ctx.addIssue({
          code: "custom",
          path,
          message: `must be at most the queue's ${of} (${max})`,
        });
      }
    };
    check(q.maxRunningPerTenant, q.maxRunning, ["maxRunningPerTenant"], "maxRunning");
    check(q.maxQueuedPerTenant, q.maxQueued, ["maxQueuedPerTenant"], "maxQueued");
    for (const [tenant, o] of Object.entries(q.tenants ?? {})) {
      check(o.maxRunning, q.maxRunning, ["tenants", tenant, "maxRunning"], "maxRunning");
      check(o.maxQueued, q.maxQueued, ["tenants", tenant, "maxQueued"], "maxQueued");
    }
  });

/** What one tenant may do in one queue: its overrides, else the queue's per-tenant fields. */
export interface TenantLimits {
  /** STARTING + RUNNING requests of the tenant in the queue. */
  maxRunning: number;
  /** QUEUED requests of the tenant in the queue. */
  maxQueued: number;
  /** The tenant's token bucket for submits and retries; null: not limited. */
  rateLimit: RateLimit | null;
}

export type RateLimit = z.output<typeof RateLimitSchema>;

/** The limits SPEC §1 gives `tenant` in `queue` (overrides first, then the queue's). */
export function tenantLimits(
  queue: Pick<
    QueueConfig,
    | "maxRunning"
    | "maxQueued"
    | "maxRunningPerTenant"
    | "maxQueuedPerTenant"
    | "rateLimit"
    | "tenants"
  >,
  tenant: string,
): TenantLimits {
  const own =
    queue.tenants && Object.hasOwn(queue.tenants, tenant) ? queue.tenants[tenant] : undefined;
  return {
    maxRunning: own?.maxRunning ?? queue.maxRunningPerTenant ?? queue.maxRunning,
    maxQueued: own?.maxQueued ?? queue.maxQueuedPerTenant ?? queue.maxQueued,
    rateLimit: own?.rateLimit ?? queue.rateLimit ?? null,
  };
}

export const LongrunConfigSchema = z
  .object({
    queues: z
      .record(
        z.string().regex(QUEUE_NAME_PATTERN, "queue names match ^[a-z][a-z0-9-]{0,62}$"),
        QueueConfigSchema,
      )
      .refine((q) => Object.keys(q).length > 0, "at least one queue is required"),
  })
  .strict();

export type QueueConfigInput = z.input<typeof QueueConfigSchema>;
/** A queue with every default filled in; `command` paths already resolved. */
export type QueueConfig = z.output<typeof QueueConfigSchema> & { name: string };
export interface LongrunConfig {
  /** Absolute path of the file the config came from (or "<inline>"). */
  source: string;
  queues: Record<string, QueueConfig>;
}
