import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyEventV2WithJWTAuthorizer,
  APIGatewayProxyStructuredResultV2,
} from "aws-lambda";
import type { HttpRequest, HttpResponse } from "../http/types.ts";

type ApiEvent = APIGatewayProxyEventV2 | APIGatewayProxyEventV2WithJWTAuthorizer;

function claimsOf(event: ApiEvent): Record<string, unknown> | undefined {
  const authorizer = (event.requestContext as { authorizer?: { jwt?: { claims?: unknown } } })
    .authorizer;
  const claims = authorizer?.jwt?.claims;
  return claims && typeof claims === "object" ? (claims as Record<string, unknown>) : undefined;
}

/**
 * An API Gateway HTTP API (payload v2) event as the runtime-agnostic request. The verified
 * claims come only from the JWT authorizer's context, never from client headers.
 */
export function fromApiGatewayV2(event: ApiEvent): HttpRequest {
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(event.headers ?? {})) headers[k.toLowerCase()] = v;
  let body: Uint8Array | string | undefined;
  if (event.body !== undefined && event.body !== null) {
    body = event.isBase64Encoded ? Buffer.from(event.body, "base64") : event.body;
  }
  // API Gateway joins repeated query parameters with commas; SPEC's comma lists survive that.
  const query: Record<string, string | undefined> = { ...(event.queryStringParameters ?? {}) };
  return {
    method: event.requestContext.http.method,
    path: event.rawPath,
    query,
    headers,
    body,
    verifiedClaims: claimsOf(event),
  };
}

/** The runtime-agnostic response as an API Gateway v2 structured result. */
export function toApiGatewayV2(res: HttpResponse): APIGatewayProxyStructuredResultV2 {
  if (typeof res.body === "string") {
    return { statusCode: res.status, headers: res.headers, body: res.body };
  }
  return {
    statusCode: res.status,
    headers: res.headers,
    body: Buffer.from(res.body).toString("base64"),
    isBase64Encoded: true,
  };
}
