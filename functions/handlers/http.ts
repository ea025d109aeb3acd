/**
 * API Gateway HTTP API (payload v2) → the runtime-agnostic API. The JWT authorizer has
 * verified the caller; the tenant is one of its claims.
 */
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyEventV2WithJWTAuthorizer,
  APIGatewayProxyStructuredResultV2,
} from "aws-lambda";
import { DynamoWebhookSecrets } from "../adapters/aws/sqs-webhooks.ts";
import { AWS_ENV, ENV } from "../config/env.ts";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { dashboardFromDir } from "../dashboard/assets.ts";
import { type Api, createApi } from "../http/app.ts";
import { claimAuthenticator, parseTenantClients } from "../http/auth.ts";
import type { DashboardAssets } from "../http/dashboard.ts";
import { fromApiGatewayV2, toApiGatewayV2 } from "./apigw.ts";
import { lambdaClients, lambdaDeps, lambdaResources, logger, tenantClaim } from "./context.ts";

type Event = APIGatewayProxyEventV2 | APIGatewayProxyEventV2WithJWTAuthorizer;

/**
 * Builds the handler over given ports (tests pass ports on an emulator). With
 * `webhookSecret`, `GET /v1/webhook-secret` answers the tenant's secret (404 otherwise), and
 * with `rotateWebhookSecret` `POST /v1/webhook-secret/rotate` makes a new one;
 * `allowInsecureWebhooks` accepts `http` webhook URLs (LONGRUN_WEBHOOK_ALLOW_PRIVATE=1).
 */
export function createHttpHandler(
  deps: CoreDeps,
  claim: string,
  options: {
    webhookSecret?: (tenant: string) => Promise<string>;
    rotateWebhookSecret?: (tenant: string) => Promise<string>;
    allowInsecureWebhooks?: boolean;
    /** Client id → tenant name (LONGRUN_TENANT_CLIENTS). */
    tenantClients?: ReadonlyMap<string, string>;
    /** The dashboard's files (the bundle's LONGRUN_UI_DIR). */
    dashboard?: DashboardAssets;
  } = {},
): (event: Event) => Promise<APIGatewayProxyStructuredResultV2> {
  const api: Api = createApi({
    deps,
    ...(options.webhookSecret ? { webhookSecret: options.webhookSecret } : {}),
    ...(options.rotateWebhookSecret ? { rotateWebhookSecret: options.rotateWebhookSecret } : {}),
    allowInsecureWebhooks: options.allowInsecureWebhooks === true,
    ...(options.dashboard ? { dashboard: options.dashboard } : {}),
    authenticate: claimAuthenticator(claim, options.tenantClients),
    onError: (error, request) =>
      logger.error("request failed", { error: error as Error, path: request.path }),
  });
  return async (event) => toApiGatewayV2(await api.handle(fromApiGatewayV2(event)));
}

let cached: ReturnType<typeof createHttpHandler> | undefined;

export const handler = (event: Event): Promise<APIGatewayProxyStructuredResultV2> => {
  if (!cached) {
    const resources = lambdaResources();
    const uiDir = process.env[ENV.uiDir];
    const secrets = resources.webhooksQueueUrl
      ? new DynamoWebhookSecrets(lambdaClients().dynamo, resources.tableName)
      : undefined;
    cached = createHttpHandler(lambdaDeps(), tenantClaim(), {
      ...(secrets
        ? {
            webhookSecret: (tenant: string) => secrets.secretFor(tenant),
            rotateWebhookSecret: (tenant: string) => secrets.rotate(tenant, Date.now()),
          }
        : {}),
      allowInsecureWebhooks: process.env[ENV.webhookAllowPrivate] === "1",
      tenantClients: parseTenantClients(process.env[AWS_ENV.tenantClients]),
      ...(uiDir ? { dashboard: dashboardFromDir(uiDir) } : {}),
    });
  }
  return cached(event);
};
