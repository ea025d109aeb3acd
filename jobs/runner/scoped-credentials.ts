/**
 * Credentials scoped to one request. A Batch job's task role is shared by every request of
 * its queue; all it may do is assume the queue's scoped role, and only with a session tag
 * naming a request. The runner assumes that role for its own request, with the tag and a
 * session policy listing that request's objects and item, uses the result for its own S3
 * and DynamoDB calls, and serves it to the job process over a loopback credentials endpoint
 * (the container-credentials protocol every AWS SDK follows), refreshed before it expires.
 * The job's environment keeps no trace of the task role's credentials.
 *
 * docs/aws.md ("What a job can reach") says what this does not cover.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  AssumeRoleCommand,
  type AssumeRoleCommandInput,
  type STSClient,
} from "@aws-sdk/client-sts";
import { REQUEST_SESSION_TAG } from "../../functions/adapters/aws/definitions.ts";
import {
  requestScopeStatements,
  type ScopeStatement,
} from "../../functions/adapters/aws/job-scope.ts";

/** Variables through which an SDK finds credentials; none of them reaches the job as it was. */
export const CREDENTIAL_ENV = [
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_SECURITY_TOKEN",
  "AWS_PROFILE",
  "AWS_SHARED_CREDENTIALS_FILE",
  "AWS_CONFIG_FILE",
  "AWS_ROLE_ARN",
  "AWS_WEB_IDENTITY_TOKEN_FILE",
  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
  "AWS_CONTAINER_CREDENTIALS_FULL_URI",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN",
  "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
] as const;

/** Role chaining caps a session at one hour; refresh well before the end. */
const SESSION_SECONDS = 3600;
const REFRESH_BEFORE_MS = 15 * 60 * 1000;

/** What one request's scope is built from. */
export interface RequestScope {
  /** The queue's scoped role (LONGRUN_SCOPED_ROLE_ARN). */
  roleArn: string;
  requestId: string;
  bucket: string;
  table: string;
}

/** Temporary credentials as the SDK's identity providers return them. */
export interface ScopedIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken: string;
  expiration: Date;
}

/** An IAM policy document. */
export interface PolicyDocument {
  Version: "2012-10-17";
  Statement: ScopeStatement[];
}

/**
 * The session policy: the request's own objects and item (job-scope.ts), whatever the role
 * would allow besides. The scoped role says the same through its session tag; this repeats
 * it with literal keys, so a session stays inside its request even if the role's policies
 * were widened by hand. The table's account and region are not known here: its name is.
 */
export function scopedSessionPolicy(scope: Omit<RequestScope, "roleArn">): PolicyDocument {
  return {
    Version: "2012-10-17",
    Statement: requestScopeStatements({
      bucketArn: `arn:aws:s3:::${scope.bucket}`,
      tableArn: `arn:aws:dynamodb:*:*:table/${scope.table}`,
      requestId: scope.requestId,
    }),
  };
}

/** The AssumeRole call for one request: its session tag, its session policy, one hour. */
export function assumeRoleInput(scope: RequestScope): AssumeRoleCommandInput {
  return {
    RoleArn: scope.roleArn,
    // Shows in CloudTrail as who did what: the request id (names allow [\w+=,.@-], ≤ 64).
    RoleSessionName: `longrun-${scope.requestId}`.replace(/[^\w+=,.@-]/g, "-").slice(0, 64),
    DurationSeconds: SESSION_SECONDS,
    Tags: [{ Key: REQUEST_SESSION_TAG, Value: scope.requestId }],
    Policy: JSON.stringify(scopedSessionPolicy(scope)),
  };
}

/** Credentials served to the job: the variables to add to its environment. */
export interface ServedCredentials {
  env: Record<string, string>;
  close(): Promise<void>;
}

/**
 * The request's scoped credentials: {@link provider} for the runner's own clients,
 * {@link serve} for the job process. One AssumeRole per hour at most.
 */
export class ScopedCredentials {
  #current: ScopedIdentity | undefined;
  #pending: Promise<ScopedIdentity> | undefined;

  constructor(
    private readonly sts: STSClient,
    readonly scope: RequestScope,
    private readonly now: () => number = Date.now,
  ) {}

  /** An SDK credential provider (`credentials:` of any client). */
  readonly provider = (): Promise<ScopedIdentity> => this.get();

  /** Current credentials, assuming the role again when they are missing or near their end. */
  async get(): Promise<ScopedIdentity> {
    const current = this.#current;
    if (current && current.expiration.getTime() - this.now() > REFRESH_BEFORE_MS) return current;
    // Concurrent callers share one AssumeRole.
    this.#pending ??= this.#assume().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #assume(): Promise<ScopedIdentity> {
    const out = await this.sts.send(new AssumeRoleCommand(assumeRoleInput(this.scope)));
    const c = out.Credentials;
    if (!c?.AccessKeyId || !c.SecretAccessKey || !c.SessionToken || !c.Expiration) {
      throw new Error(`AssumeRole of ${this.scope.roleArn} returned no credentials`);
    }
    this.#current = {
      accessKeyId: c.AccessKeyId,
      secretAccessKey: c.SecretAccessKey,
      sessionToken: c.SessionToken,
      expiration: new Date(c.Expiration),
    };
    return this.#current;
  }

  /**
   * Serves the credentials on 127.0.0.1 to callers holding a random token, in the
   * container-credentials format (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and
   * `AWS_CONTAINER_AUTHORIZATION_TOKEN`). Assumes the role first, so a refusal shows here.
   */
  async serve(): Promise<ServedCredentials> {
    await this.get();
    const token = randomBytes(32).toString("hex");
    const server: Server = createServer((req, res) => {
      if (req.headers.authorization !== token || req.method !== "GET") {
        res.writeHead(403).end();
        return;
      }
      this.get().then(
        (c) => {
          res.writeHead(200, { "content-type": "application/json" }).end(
            JSON.stringify({
              AccessKeyId: c.accessKeyId,
              SecretAccessKey: c.secretAccessKey,
              Token: c.sessionToken,
              Expiration: c.expiration.toISOString(),
            }),
          );
        },
        (error: unknown) => {
          res.writeHead(503).end(String((error as Error).message));
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    server.unref();
    const { port } = server.address() as AddressInfo;
    return {
      env: {
        AWS_CONTAINER_CREDENTIALS_FULL_URI: `http://127.0.0.1:${port}/credentials`,
        AWS_CONTAINER_AUTHORIZATION_TOKEN: token,
      },
      close: () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    };
  }
}

/** `env` without any credential variable, plus the served ones. */
export function withServedCredentials(
  env: Readonly<Record<string, string>>,
  served: Readonly<Record<string, string>>,
): Record<string, string> {
  const out: Record<string, string> = { ...env };
  for (const name of CREDENTIAL_ENV) delete out[name];
  return { ...out, ...served };
}
