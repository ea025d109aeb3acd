import { Aws, Duration } from "aws-cdk-lib";
import * as batch from "aws-cdk-lib/aws-batch";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import { Construct } from "constructs";
import { JOB_TAGS } from "../../functions/adapters/aws/batch-compute.ts";

/** Props of {@link GpuCompute}. */
export interface GpuComputeProps {
  /**
   * Instance families (`g5`) or types (`g5.2xlarge`) for GPU jobs. All must be x86_64: job
   * images are built for linux/amd64.
   */
  readonly gpuInstanceTypes: readonly string[];
  /** Families or types for queues that need no GPU; empty when every queue uses a GPU. */
  readonly cpuInstanceTypes: readonly string[];
  /** Ceiling of each compute environment, in vCPUs. */
  readonly maxvCpus: number;
  /** Availability zones; more zones widen the Spot pools Batch can draw from. */
  readonly maxAzs?: number;
  /**
   * NAT gateways. 0 (default): private isolated subnets that reach AWS only through the VPC
   * endpoints created here, so jobs cannot download from the internet (docs/aws.md).
   */
  readonly natGateways?: number;
}

/**
 * Where jobs run: a VPC without internet egress by default, reaching S3, DynamoDB, ECR,
 * CloudWatch Logs and ECS through VPC endpoints; two managed EC2 Batch compute
 * environments (Spot with price-capacity-optimised allocation first, on-demand second) on
 * the ECS GPU-optimised Amazon Linux 2023 AMI, scaling to zero; and one job queue ordering
 * them. Batch picks the NVIDIA AMI for GPU instance types and the plain one otherwise.
 */
export class GpuCompute extends Construct {
  readonly vpc: ec2.Vpc;
  /** Security group of the job instances: no inbound, HTTPS out only. */
  readonly securityGroup: ec2.SecurityGroup;
  /** First choice: Spot capacity. */
  readonly spot: batch.ManagedEc2EcsComputeEnvironment;
  /** Fallback when Spot has no capacity: on-demand. */
  readonly onDemand: batch.ManagedEc2EcsComputeEnvironment;
  /** Role of the ECS container instances (runs the ECS agent, not job code). */
  readonly instanceRole: iam.Role;
  /** The job queue every longrun queue submits to (LONGRUN_BATCH_JOB_QUEUE). */
  readonly jobQueue: batch.JobQueue;
  /**
   * Launch template of the job instances: IMDSv2 only, with a hop limit of 1 so that a
   * container (one hop further, behind the Docker bridge) cannot reach the instance
   * metadata service and the instance role's credentials.
   */
  readonly launchTemplate: ec2.LaunchTemplate;

  constructor(scope: Construct, id: string, props: GpuComputeProps) {
    super(scope, id);
    const natGateways = props.natGateways ?? 0;
    const privateType =
      natGateways > 0 ? ec2.SubnetType.PRIVATE_WITH_EGRESS : ec2.SubnetType.PRIVATE_ISOLATED;
    this.vpc = new ec2.Vpc(this, "Vpc", {
      maxAzs: props.maxAzs ?? 2,
      natGateways,
      subnetConfiguration: [
        // Public subnets exist only to host NAT gateways; without NAT there are none at all.
        ...(natGateways > 0
          ? [{ name: "public", subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }]
          : []),
        { name: "jobs", subnetType: privateType, cidrMask: 20 },
      ],
      flowLogs: {
        rejected: { trafficType: ec2.FlowLogTrafficType.REJECT },
      },
    });
    const subnets: ec2.SubnetSelection = { subnetType: privateType };

    this.securityGroup = new ec2.SecurityGroup(this, "JobSecurityGroup", {
      vpc: this.vpc,
      description: "longrun Batch job instances: no inbound, HTTPS out",
      allowAllOutbound: false,
    });
    // Every AWS API and the NAT path (when enabled) are HTTPS; nothing else leaves.
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs");

    // Gateway endpoints are free and carry the bulk traffic: image layers (ECR stores them
    // in S3), checkpoints, inputs, outputs, and progress writes.
    this.vpc.addGatewayEndpoint("S3", {
      service: ec2.GatewayVpcEndpointAwsService.S3,
      subnets: [subnets],
    });
    this.vpc.addGatewayEndpoint("DynamoDb", {
      service: ec2.GatewayVpcEndpointAwsService.DYNAMODB,
      subnets: [subnets],
    });
    if (natGateways === 0) {
      // Without NAT these are what lets an instance join its ECS cluster, pull the image,
      // ship logs and scope a job's credentials (STS). With NAT they would only save data-processing charges, so they are left out.
      const interfaceServices: Record<string, ec2.InterfaceVpcEndpointAwsService> = {
        EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
        EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
        Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
        Ecs: ec2.InterfaceVpcEndpointAwsService.ECS,
        EcsAgent: ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
        EcsTelemetry: ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
        // The job runner assumes its request's scoped role before the job starts.
        Sts: ec2.InterfaceVpcEndpointAwsService.STS,
      };
      for (const [name, service] of Object.entries(interfaceServices)) {
        const endpoint = this.vpc.addInterfaceEndpoint(name, {
          service,
          subnets,
          privateDnsEnabled: true,
          // Not open to the whole VPC: only the job instances may use the endpoints.
          open: false,
        });
        endpoint.connections.allowFrom(this.securityGroup, ec2.Port.tcp(443), "job instances");
      }
    }

    // One role for both environments: the instance only runs the ECS agent; jobs get their
    // own task role from the job definition.
    this.instanceRole = new iam.Role(this, "InstanceRole", {
      assumedBy: new iam.ServicePrincipal("ec2.amazonaws.com"),
      managedPolicies: [
        iam.ManagedPolicy.fromAwsManagedPolicyName(
          "service-role/AmazonEC2ContainerServiceforEC2Role",
        ),
      ],
    });
    const instanceRole = this.instanceRole;

    this.launchTemplate = new ec2.LaunchTemplate(this, "LaunchTemplate", {
      requireImdsv2: true,
      httpTokens: ec2.LaunchTemplateHttpTokens.REQUIRED,
      httpPutResponseHopLimit: 1,
      httpEndpoint: true,
    });

    const common: batch.ManagedEc2EcsComputeEnvironmentProps = {
      vpc: this.vpc,
      vpcSubnets: subnets,
      securityGroups: [this.securityGroup],
      instanceRole,
      launchTemplate: this.launchTemplate,
      // Idle costs nothing: Batch terminates every instance once no job is runnable.
      minvCpus: 0,
      maxvCpus: props.maxvCpus,
      useOptimalInstanceClasses: false,
      ...instanceSelection([...props.gpuInstanceTypes, ...props.cpuInstanceTypes]),
      images: [
        { imageType: batch.EcsMachineImageType.ECS_AL2023_NVIDIA },
        { imageType: batch.EcsMachineImageType.ECS_AL2023 },
      ],
      updateToLatestImageVersion: true,
      // A deploy must not kill hours of training: updates wait for running jobs.
      terminateOnUpdate: false,
      updateTimeout: Duration.minutes(30),
      replaceComputeEnvironment: false,
    };

    this.spot = new batch.ManagedEc2EcsComputeEnvironment(this, "Spot", {
      ...common,
      spot: true,
      // Balances price against interruption risk; needs no Spot Fleet role.
      allocationStrategy: batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED,
    });
    this.onDemand = new batch.ManagedEc2EcsComputeEnvironment(this, "OnDemand", {
      ...common,
      spot: false,
      allocationStrategy: batch.AllocationStrategy.BEST_FIT_PROGRESSIVE,
    });

    this.jobQueue = new batch.JobQueue(this, "JobQueue", {
      priority: 1,
      computeEnvironments: [
        { computeEnvironment: this.spot, order: 1 },
        { computeEnvironment: this.onDemand, order: 2 },
      ],
      // A job no configured instance type can hold would wait RUNNABLE forever: fail it so
      // the events handler finishes the request and frees its slot.
      jobStateTimeLimitActions: [
        {
          action: batch.JobStateTimeLimitActionsAction.CANCEL,
          maxTime: Duration.minutes(30),
          reason: batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
          state: batch.JobStateTimeLimitActionsState.RUNNABLE,
        },
        {
          action: batch.JobStateTimeLimitActionsAction.CANCEL,
          maxTime: Duration.minutes(30),
          reason: batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
          state: batch.JobStateTimeLimitActionsState.RUNNABLE,
        },
      ],
    });
  }

  /** ARN of the job queue. */
  get jobQueueArn(): string {
    return this.jobQueue.jobQueueArn;
  }

  /**
   * SubmitJob to this job queue (with any of `jobDefinitionArns`), tagging the new job with
   * JOB_TAGS (Batch authorizes tags on create as batch:TagResource on the new job), plus
   * the read calls of Batch that have no resource-level permissions (DescribeJobs,
   * ListJobs).
   */
  grantSubmit(grantee: iam.IGrantable, jobDefinitionArns: readonly string[]): iam.Grant {
    const submit = iam.Grant.addToPrincipal({
      grantee,
      actions: ["batch:SubmitJob"],
      resourceArns: [this.jobQueue.jobQueueArn, ...jobDefinitionArns],
    });
    const tag = iam.Grant.addToPrincipal({
      grantee,
      actions: ["batch:TagResource"],
      resourceArns: [this.jobArns],
      // Only longrun's tag keys, and the job-queue tag only with this deployment's queue: a
      // job tagged here is one TerminateJob may then stop.
      conditions: {
        "ForAllValues:StringEquals": { "aws:TagKeys": Object.values(JOB_TAGS) },
        StringEquals: { [`aws:RequestTag/${JOB_TAGS.jobQueue}`]: this.jobQueue.jobQueueArn },
      },
    });
    return submit.combine(tag).combine(this.grantDescribe(grantee));
  }

  /**
   * TerminateJob on the jobs longrun submitted to this job queue only: the job-queue tag it
   * puts on every job at SubmitJob (JOB_TAGS). Batch names jobs by ids assigned at submit,
   * so the ARN alone cannot be narrower than `job/*`.
   */
  grantTerminate(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ["batch:TerminateJob"],
      resourceArns: [this.jobArns],
      conditions: {
        StringEquals: { [`aws:ResourceTag/${JOB_TAGS.jobQueue}`]: this.jobQueue.jobQueueArn },
      },
    });
  }

  // Pseudo parameters rather than Stack.formatArn: the ARN (and the cdk-nag finding that
  // names it) then stays the same whether or not the stack has a concrete env.
  private get jobArns(): string {
    return `arn:${Aws.PARTITION}:batch:${Aws.REGION}:${Aws.ACCOUNT_ID}:job/*`;
  }

  /** DescribeJobs and ListJobs: Batch supports no resource restriction for them. */
  grantDescribe(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ["batch:DescribeJobs", "batch:ListJobs"],
      resourceArns: ["*"],
    });
  }
}

/**
 * Splits context values into instance types (`g5.2xlarge`) and families (`g5`), the two
 * lists Batch accepts; an unknown family fails the synth instead of the deploy.
 */
export function instanceSelection(values: readonly string[]): {
  instanceTypes: ec2.InstanceType[];
  instanceClasses: ec2.InstanceClass[];
} {
  const known = new Set<string>(Object.values(ec2.InstanceClass));
  const instanceTypes: ec2.InstanceType[] = [];
  const instanceClasses: ec2.InstanceClass[] = [];
  for (const value of values) {
    if (value.includes(".")) {
      instanceTypes.push(new ec2.InstanceType(value));
    } else if (known.has(value)) {
      instanceClasses.push(value as ec2.InstanceClass);
    } else {
      throw new Error(`unknown EC2 instance family ${value}`);
    }
  }
  return { instanceTypes, instanceClasses };
}
