/**
 * Creates longrun's bucket where nothing else does: the embedded server on the AWS adapters
 * (LONGRUN_BACKEND=aws with LONGRUN_AWS_BOOTSTRAP=1) and the integration tests. Deployed
 * stacks get their bucket from CDK instead.
 */
import {
  CreateBucketCommand,
  type CreateBucketCommandInput,
  HeadBucketCommand,
  PutBucketEncryptionCommand,
  PutPublicAccessBlockCommand,
  type S3Client,
} from "@aws-sdk/client-s3";

/** What {@link createBucket} did; settings an emulator does not implement read `false`. */
export interface BucketBootstrapResult {
  /** True when the bucket was made by this call, false when it existed already. */
  created: boolean;
  publicAccessBlocked: boolean;
  encrypted: boolean;
}

function errorName(error: unknown): string | undefined {
  return (error as { name?: string })?.name;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** Whether an error says the endpoint lacks this API altogether (an emulator's gap). */
function isUnsupported(error: unknown): boolean {
  const status = httpStatus(error);
  return (
    errorName(error) === "NotImplemented" ||
    errorName(error) === "NotImplementedError" ||
    status === 501 ||
    status === 405
  );
}

/**
 * Makes sure bucket `name` exists, refuses public access and encrypts new objects with
 * SSE-S3 by default. Safe to call again and from several processes at once. A setting the
 * endpoint does not implement (some emulators) is skipped and reported as not applied;
 * any other failure is thrown.
 */
export async function createBucket(client: S3Client, name: string): Promise<BucketBootstrapResult> {
  let created = false;
  let exists = true;
  try {
    await client.send(new HeadBucketCommand({ Bucket: name }));
  } catch (error) {
    if (httpStatus(error) !== 404 && errorName(error) !== "NotFound") throw error;
    exists = false;
  }
  if (!exists) {
    const region = await client.config.region();
    const input: CreateBucketCommandInput = { Bucket: name };
    // us-east-1 is the one region that rejects its own name as a location constraint.
    if (region && region !== "us-east-1") {
      input.CreateBucketConfiguration = {
        LocationConstraint: region as NonNullable<
          CreateBucketCommandInput["CreateBucketConfiguration"]
        >["LocationConstraint"],
      };
    }
    try {
      await client.send(new CreateBucketCommand(input));
      created = true;
    } catch (error) {
      // Another process won the race to create it: the bucket is ours all the same.
      if (errorName(error) !== "BucketAlreadyOwnedByYou") throw error;
    }
  }

  let publicAccessBlocked = true;
  try {
    await client.send(
      new PutPublicAccessBlockCommand({
        Bucket: name,
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          IgnorePublicAcls: true,
          BlockPublicPolicy: true,
          RestrictPublicBuckets: true,
        },
      }),
    );
  } catch (error) {
    if (!isUnsupported(error)) throw error;
    publicAccessBlocked = false;
  }

  let encrypted = true;
  try {
    await client.send(
      new PutBucketEncryptionCommand({
        Bucket: name,
        ServerSideEncryptionConfiguration: {
          Rules: [{ ApplyServerSideEncryptionByDefault: { SSEAlgorithm: "AES256" } }],
        },
      }),
    );
  } catch (error) {
    if (!isUnsupported(error)) throw error;
    encrypted = false;
  }
  return { created, publicAccessBlocked, encrypted };
}
