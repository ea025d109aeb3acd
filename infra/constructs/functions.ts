import { basename, join } from "node:path";
import { Duration, RemovalPolicy } from "aws-cdk-lib";
import type * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as destinations from "aws-cdk-lib/aws-lambda-destinations";
import { DynamoEventSource, SqsDlq, SqsEventSource } from "aws-cdk-lib/aws-lambda-event-sources";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { TABLE_KEY, WEBHOOKS_STREAM } from "../../functions/adapters/aws/definitions.ts";
import { AWS_ENV, ENV } from "../../functions/config/env.ts";

/**
 * Powertools for AWS Lambda settings every handler gets. Metrics land in
 * `POWERTOOLS_METRICS_NAMESPACE` with the dimension `service` = `POWERTOOLS_SERVICE_NAME`;
 * {@link import("./operations.ts").SWEEP_METRICS} relies on both values.
 */
export const POWERTOOLS_ENV = {
  POWERTOOLS_SERVICE_NAME: "longrun",
  POWERTOOLS_METRICS_NAMESPACE: "longrun",
  POWERTOOLS_LOG_LEVEL: "INFO",
} as const;

/** Where the config file sits inside every Lambda bundle (LONGRUN_CONFIG points here). */
export const LAMBDA_CONFIG_PATH = "/var/task/longrun.config.json";

/** Where the built dashboard sits inside the HTTP handler's bundle (LONGRUN_UI_DIR). */
export const LAMBDA_UI_DIR = "/var/task/ui";

/** Entry files, relative to the handlers folder; each exports `handler`. */
export const HANDLER_ENTRIES = {
  http: "http.ts",
  dispatcher: "dispatcher.ts",
  batchEvents: "batch-events.ts",
  sweep: "sweep.ts",
  webhooks: "webhooks.ts",
} as const;

/** Props of {@link Functions}. */
export interface FunctionsProps {
  /** Folder holding the entry files of {@link HANDLER_ENTRIES}. */
  readonly handlersDir: string;
  /** Repository root: package-lock.json and tsconfig.json live there. */
  readonly projectRoot: string;
  /** The longrun config file copied into every bundle. */
  readonly configPath: string;
  /** Settings of the deployment, by AWS_ENV key, shared by every handler. */
  readonly environment: Readonly<Record<string, string>>;
  /** Work queues: the dispatcher consumes the first, the events handler the second. */
  readonly dispatchQueue: sqs.IQueue;
  readonly eventsQueue: sqs.IQueue;
  /** Webhook deliveries, consumed by the webhooks handler. */
  readonly webhooksQueue: sqs.IQueue;
  /** The request table; its stream feeds the webhooks handler. */
  readonly requestTable: dynamodb.ITable;
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The five Lambda handlers, bundled by the local esbuild (no Docker) for Node.js 22 on
 * ARM64, each with the config file inside its bundle, its own log group, and the
 * deployment's environment. SQS-fed handlers report partial batch failures, so one bad
 * message is retried (and dead-lettered by its queue) without its batch neighbours.
 */
export class Functions extends Construct {
  /** API Gateway HTTP API (payload v2) handler. */
  readonly http: nodejs.NodejsFunction;
  /** Consumes the FIFO dispatch queue: starts QUEUED requests into free slots. */
  readonly dispatcher: nodejs.NodejsFunction;
  /** Consumes Batch job state-change events. */
  readonly batchEvents: nodejs.NodejsFunction;
  /** The scheduled repair sweep. */
  readonly sweep: nodejs.NodejsFunction;
  /**
   * Consumes the request table's stream (state changes become deliveries on the webhooks
   * queue) and the webhooks queue (signs and sends each delivery, re-sends failed ones).
   */
  readonly webhooks: nodejs.NodejsFunction;
  /** Failed asynchronous sweep invocations (the only async-invoked handler). */
  readonly sweepDlq: sqs.Queue;
  /** Stream batches the webhooks handler kept failing on, after every retry (metadata). */
  readonly webhooksStreamDlq: sqs.Queue;

  constructor(scope: Construct, id: string, props: FunctionsProps) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const configFile = basename(LAMBDA_CONFIG_PATH);

    const make = (
      name: keyof typeof HANDLER_ENTRIES,
      options: {
        memoryMiB: number;
        timeout: Duration;
        description: string;
        /** More commands after bundling, given the bundle's folder. */
        afterBundling?: (outputDir: string) => string[];
        environment?: Record<string, string>;
      },
    ): nodejs.NodejsFunction => {
      const logGroup = new logs.LogGroup(this, `${name}Logs`, {
        retention: props.logRetention,
        removalPolicy,
      });
      // Its own role instead of the default one with AWSLambdaBasicExecutionRole: that managed
      // policy may create and write any log group, this one writes its own only.
      const role = new iam.Role(this, `${name}Role`, {
        assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
      });
      logGroup.grantWrite(role);
      return new nodejs.NodejsFunction(this, name, {
        role,
        entry: join(props.handlersDir, HANDLER_ENTRIES[name]),
        handler: "handler",
        description: options.description,
        runtime: lambda.Runtime.NODEJS_22_X,
        // Graviton: about 20 % cheaper per GB-second for the same I/O-bound work.
        architecture: lambda.Architecture.ARM_64,
        memorySize: options.memoryMiB,
        timeout: options.timeout,
        logGroup,
        projectRoot: props.projectRoot,
        depsLockFilePath: join(props.projectRoot, "package-lock.json"),
        environment: {
          ...props.environment,
          ...POWERTOOLS_ENV,
          [ENV.config]: LAMBDA_CONFIG_PATH,
          NODE_OPTIONS: "--enable-source-maps",
          ...options.environment,
        },
        bundling: {
          forceDockerBundling: false,
          format: nodejs.OutputFormat.ESM,
          target: "node22",
          minify: true,
          sourceMap: true,
          // The lock file pins SDK versions the tests ran against; ship those, not the
          // runtime's.
          bundleAwsSDK: true,
          tsconfig: join(props.projectRoot, "tsconfig.json"),
          mainFields: ["module", "main"],
          // CommonJS dependencies inside an ESM bundle still call require().
          banner:
            "import { createRequire as __longrunCreateRequire } from 'node:module'; const require = __longrunCreateRequire(import.meta.url);",
          commandHooks: {
            beforeBundling: () => [],
            beforeInstall: () => [],
            // Handlers read the same config file as the CDK app (LONGRUN_CONFIG).
            afterBundling: (_inputDir: string, outputDir: string) => [
              `cp "${props.configPath}" "${join(outputDir, configFile)}"`,
              ...(options.afterBundling?.(outputDir) ?? []),
            ],
          },
        },
      });
    };

    this.http = make("http", {
      // More memory also means more CPU: JSON validation and presigning stay well under the
      // API Gateway 30 s limit, and cold starts shorten.
      memoryMiB: 1024,
      timeout: Duration.seconds(29),
      description: "longrun HTTP API (API Gateway HTTP API, payload v2)",
      // The dashboard is built by the project's own script into the bundle it is served from.
      afterBundling: (outputDir) => [
        `node --import tsx "${join(props.projectRoot, "functions", "dashboard", "build.ts")}" "${join(outputDir, basename(LAMBDA_UI_DIR))}"`,
      ],
      environment: { [ENV.uiDir]: LAMBDA_UI_DIR },
    });
    this.dispatcher = make("dispatcher", {
      memoryMiB: 512,
      // Below the dispatch queue's visibility timeout, as SQS event sources require.
      timeout: Duration.seconds(60),
      description: "longrun dispatcher: QUEUED -> STARTING, Batch SubmitJob",
    });
    this.batchEvents = make("batchEvents", {
      memoryMiB: 512,
      timeout: Duration.seconds(60),
      description: "longrun Batch job state-change events",
    });
    this.sweep = make("sweep", {
      memoryMiB: 512,
      // Shorter than the 5-minute schedule so two sweeps rarely overlap (overlap is safe:
      // every write is conditional).
      timeout: Duration.minutes(4),
      description: "longrun repair sweep (scheduled)",
    });

    this.webhooks = make("webhooks", {
      memoryMiB: 256,
      // A try is at most 10 s plus DNS; a batch of 10 runs concurrently. Below the queue's
      // visibility timeout, as SQS event sources require.
      timeout: Duration.seconds(30),
      description:
        "longrun webhooks: table stream -> deliveries; deliveries signed, retried by message timers",
    });

    // FIFO: batches keep message-group order; one group per longrun queue means a queue is
    // dispatched by one invocation at a time.
    this.dispatcher.addEventSource(
      new SqsEventSource(props.dispatchQueue, { batchSize: 10, reportBatchItemFailures: true }),
    );
    this.batchEvents.addEventSource(
      new SqsEventSource(props.eventsQueue, {
        batchSize: 10,
        maxBatchingWindow: Duration.seconds(1),
        reportBatchItemFailures: true,
      }),
    );

    this.webhooks.addEventSource(
      new SqsEventSource(props.webhooksQueue, { batchSize: 10, reportBatchItemFailures: true }),
    );
    this.webhooksStreamDlq = new sqs.Queue(this, "WebhooksStreamDlq", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    // Webhooks follow from committed writes: a record whose enqueue fails is retried from
    // its sequence number (partial batch responses), the batch halved to isolate it; what
    // still fails is recorded on the DLQ (and alarmed on) instead of blocking the shard.
    this.webhooks.addEventSource(
      new DynamoEventSource(props.requestTable, {
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: WEBHOOKS_STREAM.batchSize,
        maxBatchingWindow: Duration.seconds(WEBHOOKS_STREAM.maxBatchingWindowSeconds),
        retryAttempts: WEBHOOKS_STREAM.retryAttempts,
        bisectBatchOnError: WEBHOOKS_STREAM.bisectBatchOnError,
        reportBatchItemFailures: true,
        onFailure: new SqsDlq(this.webhooksStreamDlq),
        filters: [
          lambda.FilterCriteria.filter({
            dynamodb: {
              Keys: {
                [TABLE_KEY.partitionKey]: {
                  S: lambda.FilterRule.beginsWith(WEBHOOKS_STREAM.partitionKeyPrefix),
                },
              },
            },
          }),
        ],
      }),
    );

    this.sweepDlq = new sqs.Queue(this, "SweepDlq", {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    // The next scheduled run repairs what a failed one left: no automatic retry, but a
    // failed run is recorded (and alarmed on) instead of vanishing.
    this.sweep.configureAsyncInvoke({
      retryAttempts: 0,
      onFailure: new destinations.SqsDestination(this.sweepDlq),
    });
  }

  /** Every handler, for alarms and shared grants. */
  get all(): nodejs.NodejsFunction[] {
    return [this.http, this.dispatcher, this.batchEvents, this.sweep, this.webhooks];
  }

  /** Grants `grant` to every handler. */
  grantAll(grant: (grantee: iam.IGrantable) => unknown): void {
    for (const fn of this.all) grant(fn);
  }
}

/** The names of the environment every handler receives (see {@link AWS_ENV}). */
export const HANDLER_ENV_KEYS = [
  AWS_ENV.table,
  AWS_ENV.bucket,
  AWS_ENV.dispatchQueueUrl,
  AWS_ENV.eventsQueueUrl,
  AWS_ENV.webhooksQueueUrl,
  AWS_ENV.batchJobQueue,
  AWS_ENV.jobDefinitions,
  AWS_ENV.jobLogGroup,
  AWS_ENV.tenantClaim,
  ENV.config,
] as const;
