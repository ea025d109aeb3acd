/**
 * API Gateway HTTP API (payload v2) → the runtime-agnostic API. The JWT authorizer has
 * verified the caller; the tenant is one of its claims.
 */
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyEventV2WithJWTAuthorizer,
  APIGatewayProxyStructuredResultV2,
} from "aws-lambda";
import type { CoreDeps } from "../core/usecases/deps.ts";
import { type Api, createApi } from "../http/app.ts";
import { claimAuthenticator } from "../http/auth.ts";
import { fromApiGatewayV2, toApiGatewayV2 } from "./apigw.ts";
import { lambdaDeps, logger, tenantClaim } from "./context.ts";

type Event = APIGatewayProxyEventV2 | APIGatewayProxyEventV2WithJWTAuthorizer;

/** Builds the handler over given ports (tests pass ports on an emulator). */
export function createHttpHandler(
  deps: CoreDeps,
  claim: string,
): (event: Event) => Promise<APIGatewayProxyStructuredResultV2> {
  const api: Api = createApi({
    deps,
    authenticate: claimAuthenticator(claim),
    onError: (error, request) =>
      logger.error("request failed", { error: error as Error, path: request.path }),
  });
  return async (event) => toApiGatewayV2(await api.handle(fromApiGatewayV2(event)));
}

let cached: ReturnType<typeof createHttpHandler> | undefined;

export const handler = (event: Event): Promise<APIGatewayProxyStructuredResultV2> => {
  cached ??= createHttpHandler(lambdaDeps(), tenantClaim());
  return cached(event);
};
