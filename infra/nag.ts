/**
 * cdk-nag (AwsSolutions) acknowledgements: each names the finding it accepts and why.
 * Attached to the narrowest construct that carries the finding, never to the stack, so a
 * new resource with the same problem is still reported. docs/aws.md lists them for readers.
 */
import { type CfnResource, Stack, Validations } from "aws-cdk-lib";
import type { IConstruct } from "constructs";
import { REQUEST_SESSION_TAG } from "../functions/adapters/aws/definitions.ts";
import type { Api } from "./constructs/api.ts";
import type { DataBucket } from "./constructs/data-bucket.ts";
import type { Functions } from "./constructs/functions.ts";
import type { GpuCompute } from "./constructs/gpu-compute.ts";
import type { JobDefinitions } from "./constructs/job-definitions.ts";
import type { RequestTable } from "./constructs/request-table.ts";

/** The constructs whose findings are acknowledged. */
export interface NagScope {
  readonly table: RequestTable;
  readonly data: DataBucket;
  readonly compute: GpuCompute;
  readonly jobs: JobDefinitions;
  readonly functions: Functions;
  readonly api: Api;
}

/** Reasons, by finding family; docs/aws.md repeats them. */
export const NAG_REASONS = {
  requestObjects:
    "Object ARNs under one request's own folder (checkpoints, outputs, logs of the request named by the session's longrun-request tag): the files inside are named by the job, so the folder wildcard is the narrowest scope; actions are listed one by one.",
  prefixObjects:
    "Object ARNs under one S3_PREFIX of the data bucket: object keys carry request or upload ids unknown at deploy time, so a prefix wildcard is the narrowest static scope; actions are listed one by one.",
  tableIndexes:
    "All GSIs of the one request table (ready, list, listByStatus, sweep), defined in definitions.ts; queries need the index ARNs.",
  batchJobs:
    "batch:TerminateJob and batch:TagResource accept only job ARNs, whose ids are assigned at submit time; both are conditioned on the longrun:job-queue tag holding this deployment's job queue (set at SubmitJob), in this account and region.",
  batchDescribe:
    "batch:DescribeJobs and batch:ListJobs support no resource-level permissions (Service Authorization Reference); the statement holds only these read actions.",
  ecrToken:
    "ecr:GetAuthorizationToken supports no resource-level permissions; image pulls themselves are limited to the asset repository by the L2 grant.",
  ecsInstancePolicy:
    "AmazonEC2ContainerServiceforEC2Role is the policy AWS Batch documents for ECS container instances and AWS keeps it current with the ECS agent; the instances run no job code with it (jobs have their own task role).",
  runtime:
    "Node.js 22 is the LTS the handlers are built and tested for (esbuild target node22, Powertools 2); it is supported by Lambda until 2027. Moving to nodejs24.x is a tested upgrade, not a synth default.",
  sweepDlq:
    "This queue is itself a dead-letter queue: the on-failure destination of the sweep function and the DLQ of its schedule rule (cdk-nag only recognises queues named in a RedrivePolicy).",
  webhooksStreamDlq:
    "This queue is itself a dead-letter queue: the on-failure destination of the webhooks handler's stream event source (cdk-nag only recognises queues named in a RedrivePolicy).",
  streamList:
    "dynamodb:ListStreams supports no resource-level permissions; the Lambda event source needs it to find the table's stream, and the stream reads themselves are scoped to the table's stream ARN.",
  cognitoPlus:
    "Tokens are issued to machine clients by the client-credentials grant; the Plus tier's threat protection acts on user sign-ins, which this pool does not have, and would add a monthly cost.",
  publicRoutes: "SPEC §2: GET /v1/health and GET /v1/openapi.json are public by contract.",
  dashboardRoutes:
    "SPEC §2: the dashboard's static files (and the redirects to it) need no token by contract; they hold no data, and every data call the page makes carries the tenant's bearer token through the authorized routes.",
} as const;

function ack(scope: IConstruct, id: string, reason: string): void {
  Validations.of(scope).acknowledge({ id, reason });
}

function logicalId(construct: IConstruct): string {
  return Stack.of(construct).getLogicalId(construct.node.defaultChild as CfnResource);
}

/** Applies every acknowledgement of the stack's findings. */
export function applyNagAcknowledgements(scope: NagScope): void {
  const bucketArn = `<${logicalId(scope.data.bucket)}.Arn>`;
  const tableArn = `<${logicalId(scope.table.table)}.Arn>`;
  const prefixFinding = (prefix: string) => `AwsSolutions-IAM5[Resource::${bucketArn}/${prefix}*]`;
  const batchJobFinding =
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:batch:<AWS::Region>:<AWS::AccountId>:job/*]";

  for (const job of scope.jobs.jobs.values()) {
    for (const prefix of ["checkpoints/", "outputs/", "logs/"]) {
      ack(
        job.scopedRole,
        prefixFinding(`${prefix}<aws:PrincipalTag/${REQUEST_SESSION_TAG}>/`),
        NAG_REASONS.requestObjects,
      );
    }
    const executionRole = job.definition.container.executionRole;
    ack(executionRole, "AwsSolutions-IAM5[Resource::*]", NAG_REASONS.ecrToken);
  }

  const { http, dispatcher, batchEvents, sweep } = scope.functions;
  for (const fn of scope.functions.all) {
    ack(
      fn.role ?? fn,
      `AwsSolutions-IAM5[Resource::${tableArn}/index/*]`,
      NAG_REASONS.tableIndexes,
    );
    ack(fn, "AwsSolutions-L1", NAG_REASONS.runtime);
  }
  // http: inputs, result and log reads, uploads (presigned PUTs, server-side copies at submit)
  // and the checkpoint a retry copies.
  for (const prefix of ["inputs/", "outputs/", "logs/", "uploads/", "checkpoints/"]) {
    ack(http.role ?? http, prefixFinding(prefix), NAG_REASONS.prefixObjects);
  }
  ack(batchEvents.role ?? batchEvents, prefixFinding("outputs/"), NAG_REASONS.prefixObjects);
  for (const fn of [http, dispatcher, sweep]) {
    ack(fn.role ?? fn, batchJobFinding, NAG_REASONS.batchJobs);
  }
  for (const fn of [dispatcher, sweep]) {
    ack(fn.role ?? fn, "AwsSolutions-IAM5[Resource::*]", NAG_REASONS.batchDescribe);
  }
  ack(scope.functions.sweepDlq, "AwsSolutions-SQS3", NAG_REASONS.sweepDlq);
  ack(scope.functions.webhooksStreamDlq, "AwsSolutions-SQS3", NAG_REASONS.webhooksStreamDlq);
  const { webhooks } = scope.functions;
  ack(webhooks.role ?? webhooks, "AwsSolutions-IAM5[Resource::*]", NAG_REASONS.streamList);

  ack(
    scope.compute.instanceRole,
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role]",
    NAG_REASONS.ecsInstancePolicy,
  );

  if (scope.api.userPool) ack(scope.api.userPool, "AwsSolutions-COG8", NAG_REASONS.cognitoPlus);
  for (const route of scope.api.publicRoutes)
    ack(route, "AwsSolutions-APIG4", NAG_REASONS.publicRoutes);
  for (const route of scope.api.dashboardRoutes)
    ack(route, "AwsSolutions-APIG4", NAG_REASONS.dashboardRoutes);
}
