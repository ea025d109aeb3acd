/**
 * AWS SDK client settings for the integration tests: the emulator endpoint the vitest
 * globalSetup provides (test/helpers/moto.ts), a fixed region and dummy credentials.
 */
import { BatchClient, RegisterJobDefinitionCommand } from "@aws-sdk/client-batch";
import { IAMClient } from "@aws-sdk/client-iam";
import { inject } from "vitest";
import { createEmulatorJobQueue } from "../helpers/emulator-batch.ts";

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
  const jd = await batch.send(
    new RegisterJobDefinitionCommand({
      jobDefinitionName,
      type: "container",
      containerProperties: {
        image: "public.ecr.aws/docker/library/python:3.12-slim",
        command: ["python3", "train.py"],
        resourceRequirements: [
          { type: "VCPU", value: "1" },
          { type: "MEMORY", value: "2048" },
        ],
      },
    }),
  );
  if (!jd.jobDefinitionArn) throw new Error("RegisterJobDefinition returned no ARN");
  return { jobQueueArn, jobDefinitionArn: jd.jobDefinitionArn, jobDefinitionName };
}
