/**
 * AWS SDK client settings for the integration tests: the emulator endpoint the vitest
 * globalSetup provides (test/helpers/moto.ts), a fixed region and dummy credentials.
 */
import {
  BatchClient,
  CreateComputeEnvironmentCommand,
  CreateJobQueueCommand,
  RegisterJobDefinitionCommand,
} from "@aws-sdk/client-batch";
import { CreateRoleCommand, IAMClient } from "@aws-sdk/client-iam";
import { inject } from "vitest";

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

/**
 * A Batch job queue and one container job definition on the emulator, under `prefix`.
 * The compute environment is UNMANAGED: it needs only a service role (no subnets), which
 * is all the job APIs longrun uses ask for.
 */
export async function createBatchQueue(
  prefix: string,
): Promise<{ jobQueueArn: string; jobDefinitionArn: string; jobDefinitionName: string }> {
  const iam = new IAMClient(awsClientConfig());
  const role = await iam.send(
    new CreateRoleCommand({
      RoleName: `${prefix}-batch-service`,
      AssumeRolePolicyDocument: JSON.stringify({
        Version: "2012-10-17",
        Statement: [
          {
            Effect: "Allow",
            Principal: { Service: "batch.amazonaws.com" },
            Action: "sts:AssumeRole",
          },
        ],
      }),
    }),
  );
  const batch = new BatchClient(awsClientConfig());
  const env = await batch.send(
    new CreateComputeEnvironmentCommand({
      computeEnvironmentName: `${prefix}-ce`,
      type: "UNMANAGED",
      state: "ENABLED",
      serviceRole: role.Role?.Arn,
    }),
  );
  const jq = await batch.send(
    new CreateJobQueueCommand({
      jobQueueName: `${prefix}-jq`,
      state: "ENABLED",
      priority: 1,
      computeEnvironmentOrder: [{ order: 1, computeEnvironment: env.computeEnvironmentArn }],
    }),
  );
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
  if (!jq.jobQueueArn || !jd.jobDefinitionArn) throw new Error("Batch setup returned no ARN");
  return { jobQueueArn: jq.jobQueueArn, jobDefinitionArn: jd.jobDefinitionArn, jobDefinitionName };
}
