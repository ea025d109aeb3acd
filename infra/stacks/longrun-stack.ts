import { createHash } from "node:crypto";
import { dirname } from "node:path";
import { CfnOutput, RemovalPolicy, Stack, type StackProps } from "aws-cdk-lib";
import type * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { AWS_ENV } from "../../functions/config/env.ts";
import type { LongrunConfig } from "../../functions/config/schema.ts";
import { API_SCOPE, Api } from "../constructs/api.ts";
import { DataBucket } from "../constructs/data-bucket.ts";
import { Functions } from "../constructs/functions.ts";
import { GpuCompute } from "../constructs/gpu-compute.ts";
import { JobDefinitions } from "../constructs/job-definitions.ts";
import { JobEvents } from "../constructs/job-events.ts";
import { Operations } from "../constructs/operations.ts";
import { Queues } from "../constructs/queues.ts";
import { RequestTable } from "../constructs/request-table.ts";
import { SweepSchedule } from "../constructs/sweep-schedule.ts";
import { applyNagAcknowledgements } from "../nag.ts";
import { type DeploySettings, TENANT_NAME } from "../settings.ts";

/** Props of {@link LongrunStack}. */
export interface LongrunStackProps extends StackProps {
  /** The validated longrun config (the file `settings.configPath` names). */
  readonly config: LongrunConfig;
  readonly settings: DeploySettings;
  /** Repository root: jobs/Dockerfile, package-lock.json, tsconfig.json. */
  readonly projectRoot: string;
  /** Folder of the Lambda entry files. */
  readonly handlersDir: string;
}

/** CloudWatch Logs accepts only these retention periods (days). */
const RETENTION_STEPS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288,
  3653,
] as const;

/** The smallest allowed log retention that keeps logs at least `days`. */
export function logRetentionFor(days: number): logs.RetentionDays {
  const step = RETENTION_STEPS.find((d) => d >= days) ?? 3653;
  return step as logs.RetentionDays;
}

/**
 * The tenants to give a machine client: those named in context, then those the config's
 * `tenants` overrides name (SPEC §1), so an override always has a client to apply to.
 */
export function tenantNames(
  settings: Pick<DeploySettings, "tenants">,
  queues: readonly object[],
): string[] {
  const names = new Set(settings.tenants);
  for (const queue of queues) {
    // Read by shape: the overrides are optional in the config.
    const overrides = (queue as { tenants?: Record<string, unknown> }).tenants;
    for (const name of Object.keys(overrides ?? {})) {
      if (!TENANT_NAME.test(name)) {
        throw new Error(
          `tenant ${JSON.stringify(name)} of the config cannot name a machine client`,
        );
      }
      names.add(name);
    }
  }
  return [...names];
}

/**
 * Output ids must be alphanumeric: a name with other characters keeps its letters and
 * digits plus a short hash of the whole name, so `team.b` and `teamb` never share an id.
 */
function outputSuffix(tenant: string): string {
  const alnum = tenant.replace(/[^A-Za-z0-9]/g, "");
  return alnum === tenant
    ? tenant
    : `${alnum}${createHash("sha256").update(tenant).digest("hex").slice(0, 6)}`;
}

/**
 * Everything SPEC §6 lists, composed from the constructs in infra/constructs. The stack
 * only wires; each construct owns its concern and its grants.
 */
export class LongrunStack extends Stack {
  constructor(scope: Construct, id: string, props: LongrunStackProps) {
    super(scope, id, props);
    const { config, settings } = props;
    const queues = Object.values(config.queues);
    const configDir = dirname(config.source);
    const removalPolicy =
      settings.removalPolicy === "destroy" ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;
    const logRetention = logRetentionFor(settings.logRetentionDays);

    const table = new RequestTable(this, "Requests", {
      deletionProtection: settings.deletionProtection,
      removalPolicy,
    });
    const workQueues = new Queues(this, "Queues");
    const data = new DataBucket(this, "Data", {
      retentionDays: Math.max(...queues.map((q) => q.retentionDays)),
      removalPolicy,
    });

    const needsCpuOnly = queues.some((q) => q.resources.gpus === 0);
    // Enough for every queue to run maxRunning jobs at once; more would only let a bug burn
    // money, fewer would make maxRunning a lie.
    const derivedMaxvCpus = queues.reduce((sum, q) => sum + q.maxRunning * q.resources.vcpus, 0);
    const compute = new GpuCompute(this, "Compute", {
      gpuInstanceTypes: settings.gpuInstanceTypes,
      cpuInstanceTypes: needsCpuOnly ? settings.cpuInstanceTypes : [],
      maxvCpus: settings.maxvCpus ?? Math.max(8, derivedMaxvCpus),
      maxAzs: settings.maxAzs,
      natGateways: settings.natGateways,
    });
    const jobs = new JobDefinitions(this, "Jobs", {
      queues,
      configDir,
      projectRoot: props.projectRoot,
      table,
      data,
      logRetention,
      removalPolicy,
      internetAccess: settings.natGateways > 0,
    });

    const functions = new Functions(this, "Handlers", {
      handlersDir: props.handlersDir,
      projectRoot: props.projectRoot,
      configPath: config.source,
      dispatchQueue: workQueues.dispatch,
      eventsQueue: workQueues.events,
      webhooksQueue: workQueues.webhooks,
      requestTable: table.table,
      logRetention,
      removalPolicy,
      environment: {
        [AWS_ENV.table]: table.tableName,
        [AWS_ENV.bucket]: data.bucketName,
        [AWS_ENV.dispatchQueueUrl]: workQueues.dispatch.queueUrl,
        [AWS_ENV.eventsQueueUrl]: workQueues.events.queueUrl,
        [AWS_ENV.webhooksQueueUrl]: workQueues.webhooks.queueUrl,
        [AWS_ENV.batchJobQueue]: compute.jobQueueArn,
        [AWS_ENV.jobDefinitions]: this.toJsonString(jobs.definitionArns),
        [AWS_ENV.jobLogGroup]: jobs.logGroup.logGroupName,
        [AWS_ENV.tenantClaim]: settings.tenantClaim,
      },
    });
    const jobDefinitionArns = Object.values(jobs.definitionArns);

    // Least privilege per handler: what its flows in ARCHITECTURE "Flows on AWS" touch.
    const { http, dispatcher, batchEvents, sweep, webhooks } = functions;
    for (const fn of [http, dispatcher, batchEvents, sweep]) {
      table.grantReadWriteData(fn);
      workQueues.grantWakeDispatcher(fn);
    }
    // Only the webhooks handler enqueues deliveries (from the table's stream, which its
    // event source may read) and re-sends failed ones; it reads (or creates) tenants'
    // secrets and keeps each request's order record.
    workQueues.grantSendWebhooks(webhooks);
    table.grantWebhookSecrets(webhooks);
    table.grantWebhookOrder(webhooks);
    // http: submit stores the input, result presigns outputs, logs reads job logs; cancel
    // terminates a running job.
    data.grantReadWritePrefix(functions.http, "inputs");
    data.grantReadPrefix(functions.http, "outputs");
    data.grantReadPrefix(functions.http, "logs");
    // Uploads: POST /v1/uploads presigns PUTs (the URL acts with the signer's rights), GET
    // and submit HEAD them, submit copies them under inputs/; a retry copies the old
    // request's checkpoint to the new one's.
    data.grantReadWritePrefix(functions.http, "uploads");
    data.grantReadWritePrefix(functions.http, "checkpoints");
    jobs.grantReadLogs(functions.http);
    compute.grantTerminate(functions.http);
    // dispatcher: SubmitJob, and ListJobs by name before any resubmission.
    compute.grantSubmit(functions.dispatcher, jobDefinitionArns);
    // events: reads result.json when a job succeeds.
    data.grantReadPrefix(functions.batchEvents, "outputs");
    // sweep: reconciles with DescribeJobs, settles STARTING without a job, stops strays.
    compute.grantSubmit(functions.sweep, jobDefinitionArns);
    compute.grantTerminate(functions.sweep);

    new JobEvents(this, "JobEvents", {
      jobQueueArns: [compute.jobQueueArn],
      queue: workQueues.events,
      deadLetterQueue: workQueues.eventsDlq,
    });
    new SweepSchedule(this, "Sweep", {
      handler: functions.sweep,
      deadLetterQueue: functions.sweepDlq,
    });

    const api = new Api(this, "Api", {
      handler: functions.http,
      auth: settings.auth,
      tenants: settings.auth.kind === "cognito" ? tenantNames(settings, queues) : [],
      throttle: {
        rateLimit: settings.throttleRateLimit,
        burstLimit: settings.throttleBurstLimit,
      },
      logRetention,
      removalPolicy,
    });

    const ops = new Operations(this, "Operations", {
      queues,
      functions: functions.all,
      deadLetterQueues: [
        ...workQueues.deadLetterQueues,
        functions.sweepDlq,
        functions.webhooksStreamDlq,
      ],
      workQueues: [workQueues.dispatch, workQueues.events, workQueues.webhooks],
      httpApi: api.httpApi,
      alarmEmail: settings.alarmEmail,
    });

    // Outputs live on the stack itself so their names stay exactly these (README uses them).
    new CfnOutput(this, "ApiUrl", { value: api.url, description: "Base URL of the longrun API" });
    if (api.userPool && api.machineClient && api.tokenUrl) {
      new CfnOutput(this, "UserPoolId", { value: api.userPool.userPoolId });
      new CfnOutput(this, "MachineClientId", {
        value: api.machineClient.userPoolClientId,
        description: "client_id of the first tenant; its secret stays in Cognito",
      });
      new CfnOutput(this, "TokenUrl", { value: api.tokenUrl });
      new CfnOutput(this, "TokenScope", {
        value: `${API_SCOPE.resourceServer}/${API_SCOPE.scope}`,
      });
    }
    for (const [tenant, client] of api.tenantClients) {
      new CfnOutput(this, `TenantClientId${outputSuffix(tenant)}`, {
        value: client.userPoolClientId,
        description: `client_id of tenant ${tenant}`,
      });
    }
    if (api.userPool) {
      // Only the HTTP handler authenticates; the map turns a token's client_id into a name.
      // Resolved at synth, so a named client added to `api` later is in it too.
      functions.http.addEnvironment(AWS_ENV.tenantClients, api.tenantClientsJson);
    }
    new CfnOutput(this, "BucketName", { value: data.bucketName });
    new CfnOutput(this, "TableName", { value: table.tableName });
    new CfnOutput(this, "JobQueueArn", { value: compute.jobQueueArn });
    new CfnOutput(this, "AlarmTopicArn", { value: ops.alarmTopic.topicArn });
    new CfnOutput(this, "DashboardName", { value: ops.dashboard.dashboardName });

    applyNagAcknowledgements({ table, data, compute, jobs, functions, api });
  }
}
