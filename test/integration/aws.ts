/**
 * AWS SDK client settings for the integration tests: the emulator endpoint the vitest
 * globalSetup provides (test/helpers/moto.ts), a fixed region and dummy credentials.
 */
import { BatchClient } from "@aws-sdk/client-batch";
import { IAMClient } from "@aws-sdk/client-iam";
import { inject } from "vitest";
import {
  createEmulatorJobQueue,
  registerEmulatorJobDefinition,
} from "../helpers/emulator-batch.ts";

/** Constructor options every SDK client of these tests shares. */
export function awsClientConfig(): {
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
} {
  return {
    endpoint: inject("awsEndpoint"),
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  };
}

/** A name no other test file or run uses (resources on the shared endpoint persist). */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** A Batch job queue (see createEmulatorJobQueue) and one container job definition, under `prefix`. */
export async function createBatchQueue(
  prefix: string,
): Promise<{ jobQueueArn: string; jobDefinitionArn: string; jobDefinitionName: string }> {
  const batch = new BatchClient(awsClientConfig());
  const jobQueueArn = await createEmulatorJobQueue(batch, new IAMClient(awsClientConfig()), prefix);
  const jobDefinitionName = `${prefix}-finetune`;
  const jobDefinitionArn = await registerEmulatorJobDefinition(batch, jobDefinitionName, [
    "python3",
    "train.py",
  ]);
  return { jobQueueArn, jobDefinitionArn, jobDefinitionName };
}
