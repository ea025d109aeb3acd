/**
 * What one Batch job may touch: its own request's S3 objects and its request item, nothing
 * else. One builder for both places that say it: the queue's scoped role in CDK (with the
 * IAM policy variable of the session tag as the request id) and the session policy the
 * runner passes to AssumeRole (with the literal id), so the two cannot drift apart.
 */
import { REQUEST_SESSION_TAG, requestObjects } from "./definitions.ts";
import { requestPk } from "./items.ts";

/** One IAM policy statement, as JSON. */
export interface ScopeStatement {
  Effect: "Allow";
  Action: string[];
  Resource: string[];
  Condition?: Record<string, Record<string, string[]>>;
}

/** The request id as the scoped role's policies see it: the session's request tag. */
export const REQUEST_ID_POLICY_VARIABLE = `\${aws:PrincipalTag/${REQUEST_SESSION_TAG}}`;

/**
 * The statements of one request's scope: read its input; read, write and replace its
 * checkpoints; write and prune its outputs (a retried save deletes what an earlier one left);
 * write its logs; list only those prefixes; update only its request item (progress and
 * heartbeats, conditioned in items.ts).
 */
export function requestScopeStatements(target: {
  bucketArn: string;
  tableArn: string;
  requestId: string;
}): ScopeStatement[] {
  const objects = requestObjects(target.requestId);
  const object = (key: string) => `${target.bucketArn}/${key}`;
  return [
    { Effect: "Allow", Action: ["s3:GetObject"], Resource: [object(objects.input)] },
    {
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
      Resource: [object(`${objects.checkpoints}*`)],
    },
    {
      Effect: "Allow",
      Action: ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
      Resource: [object(`${objects.outputs}*`)],
    },
    {
      Effect: "Allow",
      Action: ["s3:PutObject", "s3:AbortMultipartUpload"],
      Resource: [object(`${objects.logs}*`)],
    },
    {
      Effect: "Allow",
      Action: ["s3:ListBucket"],
      Resource: [target.bucketArn],
      // Without ListBucket a missing object reads as AccessDenied, not NoSuchKey.
      Condition: {
        StringLike: {
          "s3:prefix": [objects.input, `${objects.checkpoints}*`, `${objects.outputs}*`],
        },
      },
    },
    {
      Effect: "Allow",
      Action: ["dynamodb:UpdateItem"],
      Resource: [target.tableArn],
      Condition: {
        "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": [requestPk(target.requestId)] },
      },
    },
  ];
}
