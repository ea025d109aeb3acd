/**
 * Every environment variable longrun reads, named once. Runtime entry points and the CDK
 * app both import these names; functions/core never reads the environment.
 */
export const ENV = {
  config: "LONGRUN_CONFIG",
  port: "LONGRUN_PORT",
  host: "LONGRUN_HOST",
  dataDir: "LONGRUN_DATA_DIR",
  tokens: "LONGRUN_TOKENS",
  backend: "LONGRUN_BACKEND",
  webhookAllowPrivate: "LONGRUN_WEBHOOK_ALLOW_PRIVATE",
  sweepIntervalMs: "LONGRUN_SWEEP_INTERVAL_MS",
  publicUrl: "LONGRUN_PUBLIC_URL",
  /** The user jobs run as when the server runs as root (SPEC §5). */
  jobUser: "LONGRUN_JOB_USER",
  /** Largest upload accepted, in bytes (SPEC §2; default 5 GiB, the largest S3 PUT). */
  maxUploadBytes: "LONGRUN_MAX_UPLOAD_BYTES",
  /** A folder holding the built dashboard (the HTTP Lambda's bundle ships one). */
  uiDir: "LONGRUN_UI_DIR",
} as const;

/**
 * The AWS deployment's settings, set by the CDK app on each Lambda function (and by the
 * embedded server's `LONGRUN_BACKEND=aws` mode, which may also create the resources).
 */
export const AWS_ENV = {
  table: "LONGRUN_TABLE",
  bucket: "LONGRUN_BUCKET",
  dispatchQueueUrl: "LONGRUN_DISPATCH_QUEUE_URL",
  eventsQueueUrl: "LONGRUN_EVENTS_QUEUE_URL",
  /** Standard queue of webhook deliveries; unset: the deployment sends no webhooks. */
  webhooksQueueUrl: "LONGRUN_WEBHOOKS_QUEUE_URL",
  /** ARN of the Batch job queue every longrun queue submits to. */
  batchJobQueue: "LONGRUN_BATCH_JOB_QUEUE",
  /** JSON object: longrun queue name → Batch job definition ARN. */
  jobDefinitions: "LONGRUN_JOB_DEFINITIONS",
  /** CloudWatch Logs group of the Batch jobs (default /aws/batch/job). */
  jobLogGroup: "LONGRUN_JOB_LOG_GROUP",
  /** JWT claim that names the tenant (default `sub`). */
  tenantClaim: "LONGRUN_TENANT_CLAIM",
  /**
   * JSON object: Cognito client id → tenant name, for deployments with named tenants. A
   * token of a client in it acts as that tenant; any other as its tenant claim.
   */
  tenantClients: "LONGRUN_TENANT_CLIENTS",
  /** Batch job containers: the queue's scoped role, assumed per request by the runner. */
  jobScopedRole: "LONGRUN_SCOPED_ROLE_ARN",
  /** `1`: create missing table, queues and bucket at start (emulators, first runs). */
  bootstrap: "LONGRUN_AWS_BOOTSTRAP",
  /** Resource name prefix for bootstrap-created resources (default `longrun`). */
  resourcePrefix: "LONGRUN_AWS_PREFIX",
} as const;

/** The job contract (SPEC §4): variables every job process sees. */
export const JOB_ENV = {
  requestId: "LONGRUN_REQUEST_ID",
  queue: "LONGRUN_QUEUE",
  attempt: "LONGRUN_ATTEMPT",
  inputFile: "LONGRUN_INPUT_FILE",
  /** The request's uploaded files, read-only (an empty folder when it has none). */
  inputDir: "LONGRUN_INPUT_DIR",
  outputDir: "LONGRUN_OUTPUT_DIR",
  checkpointDir: "LONGRUN_CHECKPOINT_DIR",
  progressFile: "LONGRUN_PROGRESS_FILE",
} as const;
