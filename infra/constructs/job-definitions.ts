import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { Annotations, Duration, FileSystem, RemovalPolicy, Size } from "aws-cdk-lib";
import * as batch from "aws-cdk-lib/aws-batch";
import * as ecr from "aws-cdk-lib/aws-ecr";
import { DockerImageAsset, Platform } from "aws-cdk-lib/aws-ecr-assets";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";
import { REQUEST_SESSION_TAG } from "../../functions/adapters/aws/definitions.ts";
import {
  REQUEST_ID_POLICY_VARIABLE,
  requestScopeStatements,
} from "../../functions/adapters/aws/job-scope.ts";
import { AWS_ENV } from "../../functions/config/env.ts";
import type { QueueConfig } from "../../functions/config/schema.ts";
import type { DataBucket } from "./data-bucket.ts";
import type { RequestTable } from "./request-table.ts";

/** Base images jobs/Dockerfile builds on, by what the queue needs. */
export const JOB_BASE_IMAGES = {
  /** CUDA 12 runtime with cuDNN, PyTorch and numpy: the GPU example's stack. */
  gpu: "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
  cpu: "python:3.12-slim-bookworm",
} as const;

/** Where the config file's folder lives inside a job image (see jobs/Dockerfile). */
export const JOB_APP_DIR = "/app";

/**
 * `statusReason` Batch gives an attempt it stopped at `attemptDurationSeconds`. SPEC §3: a
 * timed-out attempt is not retried, so the retry strategy exits on it.
 */
export const BATCH_TIMEOUT_STATUS_REASON = "Job attempt duration exceeded timeout";

/**
 * Extra seconds Batch grants beyond the queue's timeout. The runner enforces the timeout
 * itself (checkpoint saved, outcome `timeout`); Batch's limit is only the backstop for a
 * runner that hangs, so it must come later than the runner's SIGTERM + grace + upload.
 */
export const BATCH_TIMEOUT_MARGIN_SECONDS = 120;

/** Props of {@link JobDefinitions}. */
export interface JobDefinitionsProps {
  /** The configured queues (loadConfigFile output: command paths already absolute). */
  readonly queues: readonly QueueConfig[];
  /** Folder of the config file: relative paths of the config are relative to it. */
  readonly configDir: string;
  /** Repository root holding jobs/Dockerfile and the runner sources. */
  readonly projectRoot: string;
  readonly table: RequestTable;
  readonly data: DataBucket;
  /** Retention of the job log group. */
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy?: RemovalPolicy;
  /**
   * Whether jobs can reach the internet (NAT). Without it, images outside ECR cannot be
   * pulled, which is flagged at synth.
   */
  readonly internetAccess: boolean;
}

/** One queue's job definition and the roles its containers run with. */
export interface QueueJob {
  readonly queue: string;
  readonly definition: batch.EcsJobDefinition;
  /** The task role: it may only assume {@link scopedRole} with a request's session tag. */
  readonly role: iam.Role;
  /**
   * What a job may touch, per request: its policies name objects and the item through the
   * session's request tag (job-scope.ts). The runner assumes it for its own request.
   */
  readonly scopedRole: iam.Role;
}

/**
 * One Batch job definition per configured queue: the queue's image (a folder built by
 * jobs/Dockerfile at deploy time, or an image URI), its GPU/vCPU/memory, its timeout, a
 * retry strategy that follows SPEC §3, a job role limited to the request data it touches,
 * and awslogs into one log group.
 */
export class JobDefinitions extends Construct {
  /** Jobs by longrun queue name. */
  readonly jobs: ReadonlyMap<string, QueueJob>;
  /** stdout/stderr of every job (LONGRUN_JOB_LOG_GROUP). */
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: JobDefinitionsProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, "JobLogs", {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });

    const jobs = new Map<string, QueueJob>();
    for (const queue of props.queues) {
      const scopeId = `Queue-${queue.name}`;
      const holder = new Construct(this, scopeId);
      const role = new iam.Role(holder, "JobRole", {
        assumedBy: new iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
        description: `longrun job role of queue ${queue.name}: assumes the scoped role only`,
      });
      const scopedRole = new iam.Role(holder, "ScopedRole", {
        // Only this queue's task role, only with one request tag and no other tag.
        assumedBy: new iam.ArnPrincipal(role.roleArn).withSessionTags().withConditions({
          StringLike: { [`aws:RequestTag/${REQUEST_SESSION_TAG}`]: "?*" },
          "ForAllValues:StringEquals": { "aws:TagKeys": [REQUEST_SESSION_TAG] },
        }),
        description: `longrun job scope of queue ${queue.name}: one request per session`,
        // Role chaining caps a session at one hour anyway; the runner refreshes it.
        maxSessionDuration: Duration.hours(1),
      });
      // SPEC §4 on S3 and the progress item, for the session's request only.
      for (const statement of requestScopeStatements({
        bucketArn: props.data.bucket.bucketArn,
        tableArn: props.table.table.tableArn,
        requestId: REQUEST_ID_POLICY_VARIABLE,
      })) {
        scopedRole.addToPrincipalPolicy(iam.PolicyStatement.fromJson(statement));
      }
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ["sts:AssumeRole", "sts:TagSession"],
          resources: [scopedRole.roleArn],
        }),
      );

      const image = this.image(holder, queue, props);
      const timeoutSeconds = Math.max(
        60,
        queue.timeoutSeconds + queue.cancelGraceSeconds + BATCH_TIMEOUT_MARGIN_SECONDS,
      );
      const definition = new batch.EcsJobDefinition(holder, "JobDefinition", {
        container: new batch.EcsEc2ContainerDefinition(holder, "Container", {
          image,
          cpu: queue.resources.vcpus,
          memory: Size.mebibytes(queue.resources.memoryMiB),
          ...(queue.resources.gpus > 0 ? { gpu: queue.resources.gpus } : {}),
          command: containerCommand(queue.command, props.configDir),
          environment: {
            ...queue.env,
            [AWS_ENV.table]: props.table.tableName,
            [AWS_ENV.bucket]: props.data.bucketName,
            [AWS_ENV.jobScopedRole]: scopedRole.roleArn,
          },
          jobRole: role,
          logging: ecs.LogDriver.awsLogs({
            logGroup: this.logGroup,
            streamPrefix: queue.name,
          }),
        }),
        timeout: Duration.seconds(timeoutSeconds),
        retryAttempts: queue.maxAttempts,
        retryStrategies: retryStrategies(),
        propagateTags: true,
      });
      jobs.set(queue.name, { queue: queue.name, definition, role, scopedRole });
    }
    this.jobs = jobs;
  }

  /** `{ queue: jobDefinitionArn }`, the value of LONGRUN_JOB_DEFINITIONS. */
  get definitionArns(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, job] of this.jobs) out[name] = job.definition.jobDefinitionArn;
    return out;
  }

  /** Reading job logs (the logs route): GetLogEvents/FilterLogEvents on the job log group. */
  grantReadLogs(grantee: iam.IGrantable): iam.Grant {
    return this.logGroup.grantRead(grantee);
  }

  private image(scope: Construct, queue: QueueConfig, props: JobDefinitionsProps) {
    const folder = jobFolder(queue, props.configDir);
    if (folder) {
      const jobPath = relative(props.configDir, folder);
      if (jobPath.startsWith("..") || isAbsolute(jobPath)) {
        throw new Error(
          `queue ${queue.name}: image folder ${folder} must be inside ${props.configDir}`,
        );
      }
      const asset = new DockerImageAsset(scope, "Image", {
        directory: props.projectRoot,
        file: "jobs/Dockerfile",
        // Batch GPU instances (g5, g6) are x86_64.
        platform: Platform.LINUX_AMD64,
        buildArgs: {
          BASE_IMAGE: queue.resources.gpus > 0 ? JOB_BASE_IMAGES.gpu : JOB_BASE_IMAGES.cpu,
          JOB_PATH: jobPath === "" ? "." : jobPath.split(sep).join("/"),
        },
        buildContexts: { job: folder },
        // The asset hash covers the build context; the named context lives outside it, so
        // its contents are hashed here or an edited job would not be rebuilt.
        extraHash: FileSystem.fingerprint(folder, { exclude: ["**/__pycache__"] }),
        // Only what the runner stage copies; keeps synth fast (no node_modules hashing).
        exclude: [
          "*",
          "!package.json",
          "!package-lock.json",
          "!tsconfig.json",
          "!functions",
          "!jobs",
          "jobs/examples",
          "**/__pycache__",
        ],
      });
      return ecs.ContainerImage.fromDockerImageAsset(asset);
    }
    const uri = queue.image as string;
    const ecrUri =
      /^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?\/([^:@]+)(?::([^@]+))?(?:@(.+))?$/.exec(
        uri,
      );
    if (ecrUri) {
      // An ECR image: import the repository so the execution role gets pull rights.
      const [, account, region, name, tag, digest] = ecrUri;
      const repository = ecr.Repository.fromRepositoryAttributes(scope, "Repository", {
        repositoryArn: `arn:aws:ecr:${region}:${account}:repository/${name}`,
        repositoryName: name as string,
      });
      return ecs.ContainerImage.fromEcrRepository(repository, digest ?? tag ?? "latest");
    }
    if (!props.internetAccess) {
      Annotations.of(scope).addWarningV2(
        "longrun:image-unreachable",
        `queue ${queue.name}: ${uri} is outside ECR and the VPC has no NAT; copy it to ECR or set longrun:natGateways`,
      );
    }
    return ecs.ContainerImage.fromRegistry(uri);
  }
}

/**
 * The folder to build the queue's image from: its `image` when that is a folder (relative to
 * the config file), or, with no `image`, the folder of the first file the command names.
 * Undefined means `image` is an image URI used as it is.
 */
function jobFolder(queue: QueueConfig, configDir: string): string | undefined {
  if (queue.image !== undefined) {
    const candidate = resolve(configDir, queue.image);
    return existsSync(candidate) && statSync(candidate).isDirectory() ? candidate : undefined;
  }
  for (const part of queue.command) {
    if (isAbsolute(part) && existsSync(part) && statSync(part).isFile()) return dirname(part);
  }
  throw new Error(
    `queue ${queue.name}: no image and no job file in its command; set "image" (a folder or an image URI) for AWS`,
  );
}

/**
 * The command inside the image: paths the loader resolved against the config folder on
 * this machine are mapped to the same relative place under {@link JOB_APP_DIR}.
 */
export function containerCommand(command: readonly string[], configDir: string): string[] {
  const root = resolve(configDir);
  return command.map((part) => {
    if (!isAbsolute(part)) return part;
    const rel = relative(root, part);
    if (rel.startsWith("..") || isAbsolute(rel)) return part;
    return join(JOB_APP_DIR, rel).split(sep).join("/");
  });
}

/**
 * Batch evaluates these in order, first match wins (at most 5):
 * 1. a reclaimed Spot instance or lost host (`Host EC2*`) is retried: the next attempt
 *    resumes from the last checkpoint;
 * 2. an attempt Batch stopped at its timeout is not retried (SPEC §3: `timeout`);
 * 3. any other failure with an exit code is retried until `retryAttempts`.
 * Cancellations need no entry: Batch never retries a job ended by TerminateJob/CancelJob.
 */
export function retryStrategies(): batch.RetryStrategy[] {
  return [
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
    batch.RetryStrategy.of(
      batch.Action.EXIT,
      batch.Reason.custom({ onStatusReason: `${BATCH_TIMEOUT_STATUS_REASON}*` }),
    ),
    batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.custom({ onExitCode: "*" })),
  ];
}
