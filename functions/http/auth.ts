/**
 * Bearer-token authentication for deployments that hold a token → tenant table (the
 * embedded server's `LONGRUN_TOKENS`). On AWS the JWT authorizer has already checked the
 * caller, and the Lambda handler passes its own `authenticate` instead.
 */
import { createHash } from "node:crypto";

/** The token of an `Authorization: Bearer <token>` header, or null when there is none. */
export function bearerToken(headers: Readonly<Record<string, string | undefined>>): string | null {
  const value = headers.authorization;
  if (value === undefined) return null;
  // RFC 9110: the scheme is case-insensitive; one or more spaces separate it from the token.
  const match = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(value);
  return match?.[1] ?? null;
}

function digest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/**
 * An `authenticate` function over a fixed token → tenant table. Tokens are looked up by
 * their SHA-256, so the time a lookup takes says nothing about how much of a guessed
 * token was right.
 */
export function tokenAuthenticator(
  tokens: ReadonlyMap<string, string> | Readonly<Record<string, string>>,
): (headers: Readonly<Record<string, string | undefined>>) => Promise<string | null> {
  const byDigest = new Map<string, string>();
  const entries = tokens instanceof Map ? [...tokens.entries()] : Object.entries(tokens);
  for (const [token, tenant] of entries) byDigest.set(digest(token), tenant);
  return async (headers) => {
    const token = bearerToken(headers);
    return token === null ? null : (byDigest.get(digest(token)) ?? null);
  };
}

/**
 * An `authenticate` function for deployments behind API Gateway's JWT authorizer: the token
 * was verified before the request reached us, and the tenant is one of its claims.
 */
export function claimAuthenticator(
  claim: string,
): (
  headers: unknown,
  request: { verifiedClaims?: Readonly<Record<string, unknown>> | undefined },
) => Promise<string | null> {
  return async (_headers, request) => {
    const value = request.verifiedClaims?.[claim];
    return typeof value === "string" && value.length > 0 ? value : null;
  };
}
