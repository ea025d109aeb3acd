/**
 * On-demand list prices, us-east-1, USD, for pricing a request lifecycle. Looked up on
 * 2026-11-26 with the library search tool (no live AWS pricing page was reachable from
 * this machine). `status` says how firm each figure is:
 * - "seen": the figure appeared in a source found that day (named in `source`);
 * - "approximate": list price as of 2025, not confirmed that day; check before relying on it.
 * Free tiers, volume tiers and Savings Plans are ignored.
 */
export interface Price {
  usd: number;
  /** How many units `usd` buys. */
  per: number;
  unit: string;
  status: "seen" | "approximate";
  source: string;
}

export const PRICES_LOOKED_UP = "2026-11-26";

export const PRICES = {
  dynamoWriteRequestUnit: {
    usd: 0.625,
    per: 1_000_000,
    unit: "write request unit (on-demand)",
    status: "approximate",
    source:
      "list price as of 2025 (after the Nov 2024 on-demand price cut); search results showed older $1.25 figures too",
  },
  dynamoReadRequestUnit: {
    usd: 0.125,
    per: 1_000_000,
    unit: "read request unit (on-demand)",
    status: "approximate",
    source: "list price as of 2025 (after the Nov 2024 on-demand price cut)",
  },
  sqsFifoRequest: {
    usd: 0.5,
    per: 1_000_000,
    unit: "SQS FIFO request (64 KB chunk)",
    status: "seen",
    source: "aws.amazon.com what's-new 2016-11-17 (FIFO launch) and 2026 SQS pricing guides",
  },
  sqsStandardRequest: {
    usd: 0.4,
    per: 1_000_000,
    unit: "SQS standard request (64 KB chunk)",
    status: "seen",
    source: "aws.amazon.com what's-new 2016-11-17 and 2026 SQS pricing guides",
  },
  s3PutClassRequest: {
    usd: 0.005,
    per: 1000,
    unit: "S3 Standard PUT, COPY, POST or LIST request",
    status: "approximate",
    source: "list price as of 2025",
  },
  s3GetClassRequest: {
    usd: 0.0004,
    per: 1000,
    unit: "S3 Standard GET, SELECT and other read request",
    status: "approximate",
    source: "list price as of 2025",
  },
  batchApiRequest: {
    usd: 0,
    per: 1,
    unit: "AWS Batch API request (no additional charge; compute billed separately)",
    status: "approximate",
    source: "AWS Batch pricing page as of 2025",
  },
  lambdaRequest: {
    usd: 0.2,
    per: 1_000_000,
    unit: "Lambda request (duration excluded)",
    status: "approximate",
    source: "list price as of 2025",
  },
  httpApiRequest: {
    usd: 1.0,
    per: 1_000_000,
    unit: "API Gateway HTTP API request (first 300 M/month)",
    status: "approximate",
    source: "list price as of 2025",
  },
} as const satisfies Record<string, Price>;

/** USD for `count` units at `price`. */
export function cost(price: Price, count: number): number {
  return (price.usd / price.per) * count;
}

/** S3 operations billed at the PUT/COPY/POST/LIST rate; every other S3 call at the GET rate. */
export const S3_PUT_CLASS: ReadonlySet<string> = new Set([
  "PutObject",
  "CopyObject",
  "CreateMultipartUpload",
  "UploadPart",
  "CompleteMultipartUpload",
  "ListObjectsV2",
  "ListObjects",
  "ListBuckets",
]);
/** S3 calls that are free (DELETE and CANCEL requests). */
export const S3_FREE: ReadonlySet<string> = new Set([
  "DeleteObject",
  "DeleteObjects",
  "AbortMultipartUpload",
]);
