import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import { JOB_TAGS } from "../../functions/adapters/aws/batch-compute.ts";
import {
  DISPATCH_QUEUE,
  EVENTS_QUEUE,
  INDEXES,
  REQUEST_SESSION_TAG,
  S3_PREFIX,
  TABLE_STREAM_VIEW,
  TTL_ATTRIBUTE,
  WEBHOOKS_QUEUE,
  WEBHOOKS_STREAM,
} from "../../functions/adapters/aws/definitions.ts";
import { ITEM_KIND } from "../../functions/adapters/aws/items.ts";
import { REQUEST_ID_POLICY_VARIABLE } from "../../functions/adapters/aws/job-scope.ts";
import { AWS_ENV, ENV } from "../../functions/config/env.ts";
import type { LongrunConfig } from "../../functions/config/schema.ts";
import { OPERATIONS } from "../../functions/http/openapi.ts";
import { CLOUDWATCH_METRICS } from "../../functions/metrics/figures.ts";
import { API_ROUTES, type Api } from "../../infra/constructs/api.ts";
import { LAMBDA_UI_DIR } from "../../infra/constructs/functions.ts";
import { FAILED_RATE_ALARM, SWEEP_METRICS } from "../../infra/constructs/operations.ts";
import { readSettings, SettingsError } from "../../infra/settings.ts";
import { tenantNames } from "../../infra/stacks/longrun-stack.ts";
import { asArray, buildStack, type Statement } from "./helpers.ts";

let template: Template;
let config: LongrunConfig;

beforeAll(() => {
  const built = buildStack();
  template = Template.fromStack(built.stack);
  config = built.config;
});

type Resources = Record<string, { Properties: Record<string, any> }>;
const resources = (type: string): Resources => template.findResources(type) as Resources;
const props = (type: string) => Object.values(resources(type)).map((r) => r.Properties);

describe("API", () => {
  it("protects every route with the JWT authorizer but health, the OpenAPI document and the dashboard's files", () => {
    const routes = props("AWS::ApiGatewayV2::Route");
    const publicKeys = new Set(
      API_ROUTES.filter((r) => r.public).map((r) => `${r.method} ${r.path}`),
    );
    expect(publicKeys).toEqual(
      new Set(["GET /v1/health", "GET /v1/openapi.json", "GET /", "GET /ui", "GET /ui/{asset}"]),
    );
    // Only the dashboard's static files join health and the document without a token.
    for (const r of API_ROUTES.filter((x) => x.public)) {
      expect(r.dashboard === true || r.path.startsWith("/v1/"), r.path).toBe(true);
    }
    // Every SPEC route plus the $default catch-all.
    expect(routes).toHaveLength(API_ROUTES.length + 1);
    for (const route of routes) {
      if (publicKeys.has(route.RouteKey)) {
        expect(route.AuthorizationType, route.RouteKey).toBe("NONE");
        expect(route.AuthorizationScopes, route.RouteKey).toBeUndefined();
      } else {
        expect(route.AuthorizationType, route.RouteKey).toBe("JWT");
        expect(route.AuthorizerId, route.RouteKey).toBeDefined();
        expect(route.AuthorizationScopes, route.RouteKey).toHaveLength(1);
      }
    }
  });

  it("deploys a route for every operation the app serves, from the app's one route table", () => {
    const deployed = new Set(API_ROUTES.map((r) => `${r.method} ${r.path}`));
    for (const op of OPERATIONS) {
      // API Gateway routes `/ui/` by `/ui`: a trailing slash is not part of a route.
      const path = op.path.length > 1 ? op.path.replace(/\/$/, "") : op.path;
      expect(deployed.has(`${op.method} ${path}`), op.operationId).toBe(true);
    }
    expect(API_ROUTES.filter((r) => r.dashboard).map((r) => r.path)).toEqual([
      "/",
      "/ui",
      "/ui/{asset}",
    ]);
  });

  it("uses a Cognito user pool with a client-credentials machine client by default", () => {
    template.resourceCountIs("AWS::Cognito::UserPool", 1);
    template.hasResourceProperties("AWS::Cognito::UserPoolClient", {
      AllowedOAuthFlows: ["client_credentials"],
      GenerateSecret: true,
    });
    template.hasResourceProperties("AWS::ApiGatewayV2::Authorizer", {
      AuthorizerType: "JWT",
      JwtConfiguration: { Audience: [Match.anyValue()], Issuer: Match.anyValue() },
    });
  });

  it("throttles the stage and writes JSON access logs", () => {
    template.hasResourceProperties("AWS::ApiGatewayV2::Stage", {
      StageName: "$default",
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: {
        DestinationArn: Match.anyValue(),
        Format: Match.stringLikeRegexp("requestId"),
      },
    });
  });

  it("outputs what a caller needs", () => {
    for (const key of [
      "ApiUrl",
      "UserPoolId",
      "MachineClientId",
      "TokenUrl",
      "BucketName",
      "TableName",
    ]) {
      expect(
        Object.keys(template.findOutputs("*")).some((o) => o.includes(key)),
        key,
      ).toBe(true);
    }
  });
});

describe("state", () => {
  it("builds the table from definitions.ts: on demand, PITR, TTL, encrypted, protected", () => {
    template.resourceCountIs("AWS::DynamoDB::Table", 1);
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      BillingMode: "PAY_PER_REQUEST",
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
      SSESpecification: { SSEEnabled: true },
      DeletionProtectionEnabled: true,
    });
    const [table] = props("AWS::DynamoDB::Table");
    const names = ((table?.GlobalSecondaryIndexes ?? []) as { IndexName: string }[]).map(
      (i) => i.IndexName,
    );
    expect(names.sort()).toEqual(
      Object.values(INDEXES)
        .map((i) => i.name)
        .sort(),
    );
    template.hasResource("AWS::DynamoDB::Table", { DeletionPolicy: "Retain" });
  });

  it("gives every work queue a dead-letter queue and encrypts every queue", () => {
    template.hasResourceProperties("AWS::SQS::Queue", {
      FifoQueue: true,
      ContentBasedDeduplication: DISPATCH_QUEUE.contentBasedDeduplication,
      VisibilityTimeout: DISPATCH_QUEUE.visibilityTimeoutSeconds,
      RedrivePolicy: {
        maxReceiveCount: DISPATCH_QUEUE.maxReceiveCount,
        deadLetterTargetArn: Match.anyValue(),
      },
    });
    template.hasResourceProperties("AWS::SQS::Queue", {
      FifoQueue: Match.absent(),
      VisibilityTimeout: EVENTS_QUEUE.visibilityTimeoutSeconds,
      RedrivePolicy: {
        maxReceiveCount: EVENTS_QUEUE.maxReceiveCount,
        deadLetterTargetArn: Match.anyValue(),
      },
    });
    template.hasResourceProperties("AWS::SQS::Queue", {
      FifoQueue: Match.absent(),
      VisibilityTimeout: WEBHOOKS_QUEUE.visibilityTimeoutSeconds,
      RedrivePolicy: {
        maxReceiveCount: WEBHOOKS_QUEUE.maxReceiveCount,
        deadLetterTargetArn: {
          "Fn::GetAtt": [Match.stringLikeRegexp("^QueuesWebhooksDlq"), "Arn"],
        },
      },
    });
    for (const queue of props("AWS::SQS::Queue")) {
      expect(queue.SqsManagedSseEnabled === true || queue.KmsMasterKeyId !== undefined).toBe(true);
    }
  });

  it("keeps the bucket private, encrypted, TLS-only, with a lifecycle rule per prefix", () => {
    const buckets = props("AWS::S3::Bucket");
    for (const bucket of buckets) {
      expect(bucket.PublicAccessBlockConfiguration).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(
        bucket.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault
          .SSEAlgorithm,
      ).toBe("AES256");
    }
    const data = buckets.find((b) => b.LoggingConfiguration !== undefined);
    const prefixes = ((data?.LifecycleConfiguration.Rules ?? []) as { Prefix?: string }[])
      .map((r) => r.Prefix)
      .filter(Boolean);
    expect(prefixes.sort()).toEqual(Object.values(S3_PREFIX).sort());
    // Uploads are deleted a day after creation (SPEC §2); requests keep their own copies.
    const uploadsRule = (
      (data?.LifecycleConfiguration.Rules ?? []) as { Prefix?: string; ExpirationInDays?: number }[]
    ).find((r) => r.Prefix === S3_PREFIX.uploads);
    expect(uploadsRule).toMatchObject({ ExpirationInDays: 1, Status: "Enabled" });
    for (const policy of props("AWS::S3::BucketPolicy")) {
      expect(policy.PolicyDocument.Statement).toContainEqual(
        expect.objectContaining({
          Effect: "Deny",
          Condition: { Bool: { "aws:SecureTransport": "false" } },
        }),
      );
    }
    template.hasResource("AWS::S3::Bucket", { DeletionPolicy: "Retain" });
  });
});

describe("least privilege", () => {
  it("has no * action or resource on DynamoDB, S3 or SQS", () => {
    const dataServices = /^(dynamodb|s3|sqs):/;
    let checked = 0;
    for (const policy of props("AWS::IAM::Policy")) {
      for (const statement of policy.PolicyDocument.Statement as Statement[]) {
        const actions = asArray(statement.Action);
        if (!actions.some((a) => dataServices.test(a))) continue;
        checked++;
        for (const action of actions) {
          expect(action).not.toBe("*");
          expect(action).not.toMatch(/^[a-z0-9]+:\*$/);
        }
        // The one exception: dynamodb:ListStreams has no resource-level permissions, and the
        // stream event source needs it alone (NAG_REASONS.streamList).
        if (actions.length === 1 && actions[0] === "dynamodb:ListStreams") continue;
        for (const resource of asArray(statement.Resource)) expect(resource).not.toBe("*");
      }
    }
    expect(checked).toBeGreaterThan(10);
  });

  it("scopes a job to its own request: a task role that only assumes the scoped role", () => {
    const roles = resources("AWS::IAM::Role");
    const policies = props("AWS::IAM::Policy");
    const statementsOf = (roleId: string) =>
      policies
        .filter((p) => JSON.stringify(p.Roles) === JSON.stringify([{ Ref: roleId }]))
        .flatMap((p) => p.PolicyDocument.Statement as Statement[]);
    const queues = Object.keys(config.queues);
    for (const queue of queues) {
      const key = queue.replace(/[^A-Za-z0-9]/g, "");
      const taskId = Object.keys(roles).find((id) => id.startsWith(`JobsQueue${key}JobRole`));
      const scopedId = Object.keys(roles).find((id) => id.startsWith(`JobsQueue${key}ScopedRole`));
      expect(taskId, queue).toBeDefined();
      expect(scopedId, queue).toBeDefined();

      // The task role (what the container's credentials are) may do one thing.
      expect(statementsOf(taskId as string)).toEqual([
        {
          Effect: "Allow",
          Action: ["sts:AssumeRole", "sts:TagSession"],
          Resource: { "Fn::GetAtt": [scopedId, "Arn"] },
        },
      ]);
      // The scoped role trusts that task role only, and only with one request tag.
      const trust = roles[scopedId as string]?.Properties.AssumeRolePolicyDocument.Statement;
      expect(trust).toEqual([
        {
          Effect: "Allow",
          Action: ["sts:AssumeRole", "sts:TagSession"],
          Principal: { AWS: { "Fn::GetAtt": [taskId, "Arn"] } },
          Condition: {
            StringLike: { [`aws:RequestTag/${REQUEST_SESSION_TAG}`]: "?*" },
            "ForAllValues:StringEquals": { "aws:TagKeys": [REQUEST_SESSION_TAG] },
          },
        },
      ]);
      // Every grant of the scoped role names the session's request.
      const scoped = statementsOf(scopedId as string);
      expect(scoped.length).toBeGreaterThanOrEqual(5);
      for (const st of scoped) {
        expect(JSON.stringify(st), JSON.stringify(st)).toContain(REQUEST_ID_POLICY_VARIABLE);
      }
      expect(scoped).toContainEqual(
        expect.objectContaining({
          Action: "dynamodb:UpdateItem",
          Condition: {
            "ForAllValues:StringEquals": {
              "dynamodb:LeadingKeys": [
                `${ITEM_KIND.request.pkPrefix}${REQUEST_ID_POLICY_VARIABLE}`,
              ],
            },
          },
        }),
      );
      const actions = scoped.flatMap((st) => asArray(st.Action));
      expect(actions).not.toContain("dynamodb:GetItem");
      expect(actions).not.toContain("dynamodb:DeleteItem");
      // The runner learns the scoped role from its job definition.
      const def = props("AWS::Batch::JobDefinition").find((d) =>
        JSON.stringify(d.ContainerProperties.LogConfiguration).includes(`"${queue}"`),
      );
      expect(def?.ContainerProperties.JobRoleArn).toEqual({ "Fn::GetAtt": [taskId, "Arn"] });
      expect(def?.ContainerProperties.Environment).toContainEqual({
        Name: AWS_ENV.jobScopedRole,
        Value: { "Fn::GetAtt": [scopedId, "Arn"] },
      });
    }
  });
});

describe("Batch permissions and instances", () => {
  const jobQueueArn = () => ({
    "Fn::GetAtt": [expect.stringMatching(/^ComputeJobQueue/), "JobQueueArn"],
  });
  const statementsWith = (action: string) =>
    props("AWS::IAM::Policy").flatMap((p) =>
      (p.PolicyDocument.Statement as Statement[])
        .filter((st) => asArray(st.Action).includes(action))
        .map((st) => ({ roles: JSON.stringify(p.Roles), st })),
    );

  it("terminates only jobs longrun tagged at submit with this deployment's job queue", () => {
    const terminate = statementsWith("batch:TerminateJob");
    // http (cancel) and sweep (strays); nobody else.
    expect(terminate.map((t) => /Handlers(\w+?)Role/.exec(t.roles)?.[1]).sort()).toEqual([
      "http",
      "sweep",
    ]);
    for (const { st } of terminate) {
      expect(st.Condition).toEqual({
        StringEquals: { [`aws:ResourceTag/${JOB_TAGS.jobQueue}`]: jobQueueArn() },
      });
    }
    // Those that submit may tag new jobs with longrun's keys only, and that tag only with
    // this job queue: what makes a job one TerminateJob may stop.
    const tag = statementsWith("batch:TagResource");
    expect(tag.map((t) => /Handlers(\w+?)Role/.exec(t.roles)?.[1]).sort()).toEqual([
      "dispatcher",
      "sweep",
    ]);
    for (const { st } of tag) {
      expect(st.Condition).toEqual({
        "ForAllValues:StringEquals": { "aws:TagKeys": Object.values(JOB_TAGS) },
        StringEquals: { [`aws:RequestTag/${JOB_TAGS.jobQueue}`]: jobQueueArn() },
      });
    }
    // The value the handlers tag with is the same job queue (LONGRUN_BATCH_JOB_QUEUE).
    template.hasResourceProperties("AWS::Lambda::Function", {
      Environment: { Variables: Match.objectLike({ [AWS_ENV.batchJobQueue]: Match.anyValue() }) },
    });
    const envQueue = props("AWS::Lambda::Function").find(
      (f) => f.Environment?.Variables?.[AWS_ENV.batchJobQueue],
    )?.Environment.Variables[AWS_ENV.batchJobQueue];
    expect(envQueue).toEqual(jobQueueArn());
  });

  it("launches job instances with IMDSv2 required and a hop limit of 1", () => {
    const templates = resources("AWS::EC2::LaunchTemplate");
    expect(Object.keys(templates)).toHaveLength(1);
    const [ltId, lt] = Object.entries(templates)[0] ?? ["", { Properties: {} }];
    expect(lt.Properties.LaunchTemplateData.MetadataOptions).toMatchObject({
      HttpTokens: "required",
      HttpPutResponseHopLimit: 1,
    });
    const envs = props("AWS::Batch::ComputeEnvironment");
    expect(envs).toHaveLength(2);
    for (const env of envs) {
      expect(env.ComputeResources.LaunchTemplate).toMatchObject({
        LaunchTemplateId: { Ref: ltId },
      });
    }
  });
});

describe("GPU compute", () => {
  it("scales to zero with Spot first and on-demand as fallback on the NVIDIA AMI", () => {
    const envs = resources("AWS::Batch::ComputeEnvironment");
    expect(Object.keys(envs)).toHaveLength(2);
    for (const env of Object.values(envs)) {
      const cr = env.Properties.ComputeResources;
      expect(cr.MinvCpus).toBe(0);
      expect(cr.Ec2Configuration).toContainEqual({ ImageType: "ECS_AL2023_NVIDIA" });
      expect(cr.InstanceTypes).toEqual(expect.arrayContaining(["g5", "g6"]));
      expect(cr.InstanceTypes).not.toContain("optimal");
    }
    const spotId = Object.keys(envs).find(
      (id) => envs[id]?.Properties.ComputeResources.Type === "SPOT",
    );
    const onDemandId = Object.keys(envs).find(
      (id) => envs[id]?.Properties.ComputeResources.Type === "EC2",
    );
    expect(envs[spotId as string]?.Properties.ComputeResources.AllocationStrategy).toBe(
      "SPOT_PRICE_CAPACITY_OPTIMIZED",
    );
    template.hasResourceProperties("AWS::Batch::JobQueue", {
      ComputeEnvironmentOrder: [
        { ComputeEnvironment: { "Fn::GetAtt": [spotId, "ComputeEnvironmentArn"] }, Order: 1 },
        { ComputeEnvironment: { "Fn::GetAtt": [onDemandId, "ComputeEnvironmentArn"] }, Order: 2 },
      ],
    });
  });

  it("has no NAT gateway by default and reaches AWS through endpoints", () => {
    template.resourceCountIs("AWS::EC2::NatGateway", 0);
    template.resourceCountIs("AWS::EC2::InternetGateway", 0);
    const services = props("AWS::EC2::VPCEndpoint").map((e) => JSON.stringify(e.ServiceName));
    for (const service of [
      ".s3",
      ".dynamodb",
      ".ecr.api",
      ".ecr.dkr",
      ".logs",
      ".ecs-agent",
      ".sts",
    ]) {
      expect(
        services.some((s) => s.includes(service)),
        service,
      ).toBe(true);
    }
  });

  it("defines one job definition per queue with its resources, timeout and retries", () => {
    const definitions = props("AWS::Batch::JobDefinition");
    expect(definitions).toHaveLength(Object.keys(config.queues).length);
    for (const queue of Object.values(config.queues)) {
      const def = definitions.find((d) =>
        JSON.stringify(d.ContainerProperties.LogConfiguration).includes(`"${queue.name}"`),
      );
      expect(def, queue.name).toBeDefined();
      const req = def?.ContainerProperties.ResourceRequirements as {
        Type: string;
        Value: string;
      }[];
      expect(req).toContainEqual({ Type: "VCPU", Value: String(queue.resources.vcpus) });
      expect(req).toContainEqual({ Type: "MEMORY", Value: String(queue.resources.memoryMiB) });
      if (queue.resources.gpus > 0) {
        expect(req).toContainEqual({ Type: "GPU", Value: String(queue.resources.gpus) });
      } else {
        expect(req.some((r) => r.Type === "GPU")).toBe(false);
      }
      expect(def?.Timeout.AttemptDurationSeconds).toBeGreaterThanOrEqual(queue.timeoutSeconds);
      expect(def?.RetryStrategy).toEqual({
        Attempts: queue.maxAttempts,
        EvaluateOnExit: [
          { Action: "RETRY", OnStatusReason: "Host EC2*" },
          { Action: "EXIT", OnStatusReason: "Job attempt duration exceeded timeout*" },
          { Action: "RETRY", OnExitCode: "*" },
        ],
      });
      expect(def?.ContainerProperties.LogConfiguration.LogDriver).toBe("awslogs");
      // Paths of the config resolve inside the image, never to this machine.
      for (const part of (def?.ContainerProperties.Command ?? []) as string[]) {
        expect(part.startsWith(process.cwd())).toBe(false);
      }
    }
  });
});

describe("events and schedules", () => {
  it("sends Batch state changes of longrun's job queue to the events queue", () => {
    const [queueId] = Object.keys(resources("AWS::Batch::JobQueue"));
    template.hasResourceProperties("AWS::Events::Rule", {
      EventPattern: {
        source: ["aws.batch"],
        // Blocked-queue events carry the reason a RUNNABLE job waits (waitDetail).
        "detail-type": ["Batch Job State Change", "Batch Job Queue Blocked"],
        detail: { jobQueue: [{ "Fn::GetAtt": [queueId, "JobQueueArn"] }] },
      },
      Targets: [Match.objectLike({ Arn: Match.anyValue(), DeadLetterConfig: Match.anyValue() })],
    });
  });

  it("runs the sweep every five minutes", () => {
    template.hasResourceProperties("AWS::Events::Rule", { ScheduleExpression: "rate(5 minutes)" });
  });
});

describe("functions", () => {
  it("run on Node.js 22 or newer, on ARM64, with the deployment's environment", () => {
    const fns = Object.values(resources("AWS::Lambda::Function")).filter(
      (f) => f.Properties.Environment?.Variables?.[ENV.config] !== undefined,
    );
    expect(fns).toHaveLength(5);
    for (const fn of fns) {
      const p = fn.Properties;
      expect(Number(/^nodejs(\d+)\.x$/.exec(p.Runtime)?.[1])).toBeGreaterThanOrEqual(22);
      expect(p.Architectures).toEqual(["arm64"]);
      for (const key of [
        AWS_ENV.table,
        AWS_ENV.bucket,
        AWS_ENV.dispatchQueueUrl,
        AWS_ENV.webhooksQueueUrl,
        AWS_ENV.batchJobQueue,
        AWS_ENV.jobDefinitions,
      ]) {
        expect(p.Environment.Variables[key], key).toBeDefined();
      }
      expect(p.Environment.Variables.POWERTOOLS_SERVICE_NAME).toBe("longrun");
    }
  });

  it("report partial batch failures from SQS and the table's stream", () => {
    const mappings = props("AWS::Lambda::EventSourceMapping");
    expect(mappings).toHaveLength(4);
    for (const m of mappings) expect(m.FunctionResponseTypes).toEqual(["ReportBatchItemFailures"]);
  });

  it("deliver webhooks from the webhooks queue with a handler of their own", () => {
    const fns = Object.entries(resources("AWS::Lambda::Function")).filter(([id]) =>
      id.startsWith("Handlerswebhooks"),
    );
    expect(fns).toHaveLength(1);
    const [fnId, fn] = fns[0] ?? ["", { Properties: {} }];
    expect(Number(/^nodejs(\d+)\.x$/.exec(fn.Properties.Runtime)?.[1])).toBeGreaterThanOrEqual(22);
    // Shorter than the queue's visibility timeout, as SQS event sources require.
    expect(fn.Properties.Timeout).toBeLessThan(WEBHOOKS_QUEUE.visibilityTimeoutSeconds);
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      FunctionName: { Ref: fnId },
      EventSourceArn: { "Fn::GetAtt": [Match.stringLikeRegexp("^QueuesWebhooks(?!Dlq)"), "Arn"] },
      FunctionResponseTypes: ["ReportBatchItemFailures"],
    });
    // Its item access is the secrets' GetItem and PutItem and the order records' reads and
    // writes (only items whose key starts WHORD#); the stream reads are the event source's.
    const policies = props("AWS::IAM::Policy").filter((p) =>
      JSON.stringify(p.Roles).includes("HandlerswebhooksRole"),
    );
    const statements = policies.flatMap((p) => p.PolicyDocument.Statement as Statement[]);
    const actions = statements.flatMap((s) => asArray(s.Action));
    const itemActions = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"];
    expect([...new Set(actions.filter((a) => itemActions.includes(a)))].sort()).toEqual(
      itemActions,
    );
    expect(
      actions.filter(
        (a) =>
          a.startsWith("dynamodb:") &&
          !itemActions.includes(a) &&
          !/Stream|GetRecords|GetShardIterator/.test(a),
      ),
    ).toEqual([]);
    expect(actions).toContain("sqs:SendMessage");
    // ... and only on webhook-secret and webhook-order items: every item statement names the
    // table (no index) and holds the LeadingKeys condition on one of those prefixes of
    // items.ts; the secrets' statement has no UpdateItem. (The stream statements are the
    // event source's, on the stream's ARN, and ListStreams.)
    const itemStatements = statements.filter((st) =>
      asArray(st.Action).some((a) => itemActions.includes(a)),
    );
    expect(itemStatements.length).toBe(2);
    const prefixes: string[] = [];
    for (const st of itemStatements) {
      expect(asArray(st.Resource)).toEqual([
        { "Fn::GetAtt": [expect.stringMatching(/^RequestsTable/), "Arn"] },
      ]);
      const condition = st.Condition as
        | { "ForAllValues:StringLike"?: { "dynamodb:LeadingKeys"?: string[] } }
        | undefined;
      const keys = condition?.["ForAllValues:StringLike"]?.["dynamodb:LeadingKeys"];
      prefixes.push(...(keys ?? []));
      if (asArray(st.Action).includes("dynamodb:UpdateItem")) {
        expect(keys).toEqual([`${ITEM_KIND.webhookOrder.pkPrefix}*`]);
      }
    }
    expect(prefixes.sort()).toEqual(
      [`${ITEM_KIND.webhookOrder.pkPrefix}*`, `${ITEM_KIND.webhookSecret.pkPrefix}*`].sort(),
    );
  });

  it("derive webhooks from the table's stream, with retries, bisection and a DLQ", () => {
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      StreamSpecification: { StreamViewType: TABLE_STREAM_VIEW },
    });
    const [fnId] = Object.keys(resources("AWS::Lambda::Function")).filter((id) =>
      id.startsWith("Handlerswebhooks"),
    );
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      FunctionName: { Ref: fnId },
      EventSourceArn: { "Fn::GetAtt": [Match.stringLikeRegexp("^RequestsTable"), "StreamArn"] },
      StartingPosition: "TRIM_HORIZON",
      BisectBatchOnFunctionError: WEBHOOKS_STREAM.bisectBatchOnError,
      MaximumRetryAttempts: WEBHOOKS_STREAM.retryAttempts,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      DestinationConfig: {
        OnFailure: {
          Destination: {
            "Fn::GetAtt": [Match.stringLikeRegexp("^HandlersWebhooksStreamDlq"), "Arn"],
          },
        },
      },
      FilterCriteria: {
        Filters: [
          { Pattern: JSON.stringify({ dynamodb: { Keys: { pk: { S: [{ prefix: "REQ#" }] } } } }) },
        ],
      },
    });
  });

  it("let only the webhooks handler send to the webhooks queue: writers no longer enqueue", () => {
    const sends = (name: string) =>
      props("AWS::IAM::Policy")
        .filter((p) => JSON.stringify(p.Roles).includes(`Handlers${name}Role`))
        .some((p) =>
          (p.PolicyDocument.Statement as Statement[]).some(
            (s) =>
              asArray(s.Action).includes("sqs:SendMessage") &&
              JSON.stringify(s.Resource).includes("QueuesWebhooks") &&
              !JSON.stringify(s.Resource).includes("WebhooksDlq"),
          ),
        );
    for (const name of ["http", "dispatcher", "batchEvents", "sweep"]) {
      expect(sends(name), name).toBe(false);
    }
    expect(sends("webhooks")).toBe(true);
  });

  it("sends failed sweep runs to a dead-letter queue", () => {
    template.hasResourceProperties("AWS::Lambda::EventInvokeConfig", {
      MaximumRetryAttempts: 0,
      DestinationConfig: { OnFailure: { Destination: Match.anyValue() } },
    });
  });
});

describe("operations", () => {
  it("alarms on dead letters, stuck STARTING and old QUEUED requests of every queue", () => {
    const alarms = props("AWS::CloudWatch::Alarm");
    const dlqAlarms = alarms.filter((a) => a.MetricName === "ApproximateNumberOfMessagesVisible");
    // dispatch, events and webhooks DLQs, and the sweep's and the stream's failure
    // destinations.
    expect(dlqAlarms).toHaveLength(5);
    for (const queue of Object.keys(config.queues)) {
      for (const metric of [SWEEP_METRICS.stuckStarting, SWEEP_METRICS.oldestQueuedAge]) {
        template.hasResourceProperties("AWS::CloudWatch::Alarm", {
          Namespace: SWEEP_METRICS.namespace,
          MetricName: metric,
          Dimensions: Match.arrayWith([{ Name: SWEEP_METRICS.queueDimension, Value: queue }]),
          AlarmActions: [Match.anyValue()],
        });
      }
    }
    template.resourceCountIs("AWS::CloudWatch::Dashboard", 1);
  });

  it("alarms on each queue's FAILED rate from the handlers' EMF figures", () => {
    const alarms = props("AWS::CloudWatch::Alarm").filter((a) => Array.isArray(a.Metrics));
    for (const queue of Object.keys(config.queues)) {
      const alarm = alarms.find((a) =>
        a.Metrics.some((m: any) =>
          m.MetricStat?.Metric?.Dimensions?.some(
            (d: any) => d.Name === "queue" && d.Value === queue,
          ),
        ),
      );
      expect(alarm, queue).toBeDefined();
      expect(alarm?.Threshold).toBe(FAILED_RATE_ALARM.percent);
      const stats = alarm?.Metrics.filter((m: any) => m.MetricStat).map((m: any) => m.MetricStat);
      expect(stats.map((m: any) => m.Metric.MetricName)).toEqual(
        Array(4).fill(CLOUDWATCH_METRICS.finished),
      );
      for (const m of stats) {
        expect(m.Metric.Namespace).toBe(SWEEP_METRICS.namespace);
        const names = m.Metric.Dimensions.map((d: any) => d.Name).sort();
        expect(names).toEqual(["queue", "service", "status"]);
      }
      const statuses = stats.map(
        (m: any) => m.Metric.Dimensions.find((d: any) => d.Name === "status").Value,
      );
      expect(statuses.sort()).toEqual(["CANCELLED", "EXPIRED", "FAILED", "SUCCEEDED"]);
    }
  });

  it("ships the dashboard in the HTTP handler and tells it where", () => {
    const fns = props("AWS::Lambda::Function").filter(
      (f) => f.Environment?.Variables?.[ENV.uiDir] !== undefined,
    );
    expect(fns).toHaveLength(1);
    expect(fns[0]?.Environment.Variables[ENV.uiDir]).toBe(LAMBDA_UI_DIR);
    expect(fns[0]?.Description).toMatch(/HTTP API/);
  });
});

describe("machine clients and named tenants", () => {
  let named: Template;
  let api: Api;

  beforeAll(() => {
    const built = buildStack({ "longrun:tenants": "team-a,team.b" });
    api = built.stack.node.findChild("Api") as Api;
    // A client added after the API was built must be accepted too (it was not: 401).
    api.addMachineClient("Extra");
    named = Template.fromStack(built.stack);
  });

  it("accepts a token of every machine client, including one added later", () => {
    const clientIds = Object.keys(named.findResources("AWS::Cognito::UserPoolClient"));
    expect(clientIds).toHaveLength(3);
    const authorizers = Object.values(
      named.findResources("AWS::ApiGatewayV2::Authorizer") as Resources,
    );
    expect(authorizers).toHaveLength(1);
    const audience = authorizers[0]?.Properties.JwtConfiguration.Audience as { Ref: string }[];
    expect(audience.map((a) => a.Ref).sort()).toEqual([...clientIds].sort());
  });

  it("gives each named tenant a client and the HTTP handler the client → name map", () => {
    const clients = named.findResources("AWS::Cognito::UserPoolClient") as Resources;
    const byName = (name: string) =>
      Object.keys(clients).find((id) => clients[id]?.Properties.ClientName === `longrun-${name}`);
    const a = byName("team-a");
    const b = byName("team.b");
    expect(a).toBeDefined();
    expect(b).toBeDefined();
    const fns = named.findResources("AWS::Lambda::Function") as Resources;
    const withMap = Object.entries(fns).filter(
      ([, f]) => f.Properties.Environment?.Variables?.[AWS_ENV.tenantClients] !== undefined,
    );
    expect(withMap.map(([id]) => id)).toEqual([expect.stringMatching(/^Handlershttp/)]);
    // The env value is a JSON object built with the clients' Refs; resolve them to check it.
    const value = withMap[0]?.[1].Properties.Environment.Variables[AWS_ENV.tenantClients];
    const resolved = (value["Fn::Join"][1] as unknown[])
      .map((part) => (typeof part === "string" ? part : `<${(part as { Ref: string }).Ref}>`))
      .join("");
    expect(JSON.parse(resolved)).toEqual({ [`<${a}>`]: "team-a", [`<${b}>`]: "team.b" });
    const outputs = named.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(Object.values(outputs).map((o) => o.Value)).toEqual(
      expect.arrayContaining([{ Ref: a }, { Ref: b }]),
    );
  });

  it("names the tenants of the context and of the config's overrides, each once", () => {
    const queues = [{ name: "q1", tenants: { "team-c": {}, "team-a": {} } }, { name: "q2" }];
    expect(tenantNames({ tenants: ["team-a", "team-b"] }, queues)).toEqual([
      "team-a",
      "team-b",
      "team-c",
    ]);
    expect(() => tenantNames({ tenants: [] }, [{ tenants: { "bad name": {} } }])).toThrow(
      /bad name/,
    );
  });

  it("refuses tenant names a client cannot carry, and tenants with an external issuer", () => {
    const read = (context: Record<string, unknown>) => readSettings(new App({ context }).node, {});
    expect(read({ "longrun:tenants": "team-a, team-b" }).tenants).toEqual(["team-a", "team-b"]);
    expect(() => read({ "longrun:tenants": "a b" })).toThrow(SettingsError);
    expect(() => read({ "longrun:tenants": "-x" })).toThrow(SettingsError);
    expect(() =>
      read({
        "longrun:tenants": "team-a",
        "longrun:jwtIssuer": "https://issuer.example.com/",
        "longrun:jwtAudience": "x",
      }),
    ).toThrow(SettingsError);
  });
});

describe("with an external issuer", () => {
  it("uses its issuer and audience and creates no user pool", () => {
    const external = Template.fromStack(
      buildStack({
        "longrun:jwtIssuer": "https://issuer.example.com/",
        "longrun:jwtAudience": "longrun-api,other",
        "longrun:tenantClaim": "org_id",
      }).stack,
    );
    external.resourceCountIs("AWS::Cognito::UserPool", 0);
    external.hasResourceProperties("AWS::ApiGatewayV2::Authorizer", {
      JwtConfiguration: {
        Issuer: "https://issuer.example.com/",
        Audience: ["longrun-api", "other"],
      },
    });
    external.hasResourceProperties("AWS::Lambda::Function", {
      Environment: { Variables: Match.objectLike({ [AWS_ENV.tenantClaim]: "org_id" }) },
    });
  });
});
