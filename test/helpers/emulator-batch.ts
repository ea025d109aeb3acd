/**
 * A Batch job queue on the AWS emulator, for the integration tests and the benchmark. The
 * compute environment is UNMANAGED: it needs only a service role (no subnets), which is all
 * the job APIs longrun uses ask for.
 */
import {
  type BatchClient,
  CreateComputeEnvironmentCommand,
  CreateJobQueueCommand,
  RegisterJobDefinitionCommand,
} from "@aws-sdk/client-batch";
import { CreateRoleCommand, type IAMClient } from "@aws-sdk/client-iam";

/** Creates the service role, compute environment and job queue under `prefix`; the queue's ARN. */
export async function createEmulatorJobQueue(
  batch: BatchClient,
  iam: IAMClient,
  prefix: string,
): Promise<string> {
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
  if (!jq.jobQueueArn) throw new Error("CreateJobQueue returned no ARN");
  return jq.jobQueueArn;
}

/** Registers a container job definition named `name` (the emulator runs nothing); its ARN. */
export async function registerEmulatorJobDefinition(
  batch: BatchClient,
  name: string,
  command: string[] = ["python3", "-m", "longrun_runner"],
): Promise<string> {
  const out = await batch.send(
    new RegisterJobDefinitionCommand({
      jobDefinitionName: name,
      type: "container",
      containerProperties: {
        image: "public.ecr.aws/docker/library/python:3.12-slim",
        command,
        resourceRequirements: [
          { type: "VCPU", value: "1" },
          { type: "MEMORY", value: "2048" },
        ],
      },
    }),
  );
  if (!out.jobDefinitionArn) throw new Error("RegisterJobDefinition returned no ARN");
  return out.jobDefinitionArn;
}
