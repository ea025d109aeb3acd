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
  })
  .strict();

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
