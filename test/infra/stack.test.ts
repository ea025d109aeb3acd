import { Match, Template } from "aws-cdk-lib/assertions";
import { beforeAll, describe, expect, it } from "vitest";
import {
  DISPATCH_QUEUE,
  EVENTS_QUEUE,
  INDEXES,
  S3_PREFIX,
  TABLE_STREAM_VIEW,
  TTL_ATTRIBUTE,
  WEBHOOKS_QUEUE,
  WEBHOOKS_STREAM,
} from "../../functions/adapters/aws/definitions.ts";
import { AWS_ENV, ENV } from "../../functions/config/env.ts";
import type { LongrunConfig } from "../../functions/config/schema.ts";
import { API_ROUTES } from "../../infra/constructs/api.ts";
import { SWEEP_METRICS } from "../../infra/constructs/operations.ts";
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
  it("protects every route with the JWT authorizer but health and the OpenAPI document", () => {
    const routes = props("AWS::ApiGatewayV2::Route");
    const publicKeys = new Set(
      API_ROUTES.filter((r) => r.public).map((r) => `${r.method} ${r.path}`),
    );
    expect(publicKeys).toEqual(new Set(["GET /v1/health", "GET /v1/openapi.json"]));
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

  it("lets a job update request items only, never read or delete them", () => {
    template.hasResourceProperties("AWS::IAM::Policy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: "dynamodb:UpdateItem",
            Condition: { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["REQ#*"] } },
          }),
        ]),
      },
    });
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
    for (const service of [".s3", ".dynamodb", ".ecr.api", ".ecr.dkr", ".logs", ".ecs-agent"]) {
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
        "detail-type": ["Batch Job State Change"],
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
    for (const s of statements.filter((s) => asArray(s.Action).includes("dynamodb:UpdateItem"))) {
      expect(s.Condition).toEqual({
        "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["WHORD#*"] },
      });
    }
    expect(
      actions.filter(
        (a) =>
          a.startsWith("dynamodb:") &&
          !itemActions.includes(a) &&
          !/Stream|GetRecords|GetShardIterator/.test(a),
      ),
    ).toEqual([]);
    expect(actions).toContain("sqs:SendMessage");
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
