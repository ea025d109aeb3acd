import { Duration, RemovalPolicy } from "aws-cdk-lib";
import * as iam from "aws-cdk-lib/aws-iam";
import * as s3 from "aws-cdk-lib/aws-s3";
import { Construct } from "constructs";
import { S3_PREFIX } from "../../functions/adapters/aws/definitions.ts";
import { UPLOAD_LIFETIME_MS } from "../../functions/core/upload.ts";

/**
 * Days after which S3 deletes an upload's bytes: its lifetime (SPEC §2: 24 hours) in whole
 * days, as lifecycle rules count. S3 acts at the next midnight UTC after that, so the
 * bytes may outlive the upload by up to a day; the upload record reads as gone on time.
 */
export const UPLOAD_EXPIRATION_DAYS = Math.ceil(UPLOAD_LIFETIME_MS / 86_400_000);

/** Props of {@link DataBucket}. */
export interface DataBucketProps {
  /**
   * Days after which inputs, outputs, checkpoints and job logs are deleted: the longest
   * `retentionDays` of the configured queues (a finished request's files must outlive it).
   */
  readonly retentionDays: number;
  /** RETAIN (default) keeps the bucket and its objects when the stack is deleted. */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The S3 bucket for inputs, outputs, checkpoints and job logs, one prefix each
 * (`S3_PREFIX` of `definitions.ts`). Private, SSE-S3, TLS only; every prefix expires after the longest retention.
 */
export class DataBucket extends Construct {
  /** The bucket; prefer the grant methods. */
  readonly bucket: s3.Bucket;
  /** Server access logs of the data bucket (who fetched which artifact, presigned or not). */
  readonly accessLogs: s3.Bucket;

  constructor(scope: Construct, id: string, props: DataBucketProps) {
    super(scope, id);
    const removalPolicy = props.removalPolicy ?? RemovalPolicy.RETAIN;
    const secure = {
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
    } as const;

    this.accessLogs = new s3.Bucket(this, "AccessLogs", {
      ...secure,
      // Access logging still delivers with ACLs disabled when the bucket policy allows it,
      // which the L2 adds; keep access logs a year for audits.
      lifecycleRules: [{ expiration: Duration.days(365) }],
    });

    const days = Duration.days(props.retentionDays);
    this.bucket = new s3.Bucket(this, "Bucket", {
      ...secure,
      serverAccessLogsBucket: this.accessLogs,
      serverAccessLogsPrefix: "data/",
      lifecycleRules: [
        // Multipart uploads a crashed runner left behind are never completed: clear them.
        { id: "abort-incomplete-uploads", abortIncompleteMultipartUploadAfter: Duration.days(2) },
        ...Object.entries(S3_PREFIX).map(([kind, prefix]) => ({
          id: `expire-${kind}`,
          prefix,
          // Checkpoints are only useful while a request may still run; the others follow the
          // request's retention. Both are bounded by the longest retention configured.
          // Uploads live a day: a request keeps its own copies (s3-files.ts).
          expiration: kind === "uploads" ? Duration.days(UPLOAD_EXPIRATION_DAYS) : days,
        })),
      ],
    });
  }

  /** Bucket name, for environments. */
  get bucketName(): string {
    return this.bucket.bucketName;
  }

  /** Read objects under one kind's prefix (e.g. presigning output URLs). */
  grantReadPrefix(grantee: iam.IGrantable, kind: keyof typeof S3_PREFIX): iam.Grant {
    return this.grantObjects(grantee, kind, ["s3:GetObject"]).combine(
      this.grantList(grantee, kind),
    );
  }

  /** Read, write and delete under one kind's prefix (checkpoints are replaced). */
  grantReadWritePrefix(grantee: iam.IGrantable, kind: keyof typeof S3_PREFIX): iam.Grant {
    return this.grantObjects(grantee, kind, [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
    ]).combine(this.grantList(grantee, kind));
  }

  // Explicit actions rather than the L2's `s3:GetObject*`-style groups: only what the
  // runner and the handlers call, on one prefix.
  private grantObjects(
    grantee: iam.IGrantable,
    kind: keyof typeof S3_PREFIX,
    actions: string[],
  ): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions,
      resourceArns: [this.bucket.arnForObjects(`${S3_PREFIX[kind]}*`)],
    });
  }

  // ListBucket is a bucket action; the s3:prefix condition keeps listings inside the prefix.
  private grantList(grantee: iam.IGrantable, kind: keyof typeof S3_PREFIX): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ["s3:ListBucket"],
      resourceArns: [this.bucket.bucketArn],
      conditions: { StringLike: { "s3:prefix": [`${S3_PREFIX[kind]}*`] } },
    });
  }
}
