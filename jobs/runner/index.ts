/**
 * The job runner: SPEC §4 implemented once, for the embedded server and (with S3 storage)
 * the AWS Batch container entrypoint.
 */
export * from "./attempt.ts";
export * from "./leftovers.ts";
export * from "./process-group.ts";
