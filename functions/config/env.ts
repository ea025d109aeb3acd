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
} as const;

/** The job contract (SPEC §4): variables every job process sees. */
export const JOB_ENV = {
  requestId: "LONGRUN_REQUEST_ID",
  queue: "LONGRUN_QUEUE",
  attempt: "LONGRUN_ATTEMPT",
  inputFile: "LONGRUN_INPUT_FILE",
  outputDir: "LONGRUN_OUTPUT_DIR",
  checkpointDir: "LONGRUN_CHECKPOINT_DIR",
  progressFile: "LONGRUN_PROGRESS_FILE",
} as const;
