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
 * was verified before the request reached us, and the tenant is one of its claims. With
 * `tenantClients` (client id → tenant name, LONGRUN_TENANT_CLIENTS), a token issued to one
 * of those clients (its `client_id` claim) acts as the client's named tenant, so the
 * config's `tenants` overrides name tenants the same way on every backend.
 */
export function claimAuthenticator(
  claim: string,
  tenantClients: ReadonlyMap<string, string> = new Map(),
): (
  headers: unknown,
  request: { verifiedClaims?: Readonly<Record<string, unknown>> | undefined },
) => Promise<string | null> {
  return async (_headers, request) => {
    const clientId = request.verifiedClaims?.client_id;
    const named = typeof clientId === "string" ? tenantClients.get(clientId) : undefined;
    if (named !== undefined) return named;
    const value = request.verifiedClaims?.[claim];
    return typeof value === "string" && value.length > 0 ? value : null;
  };
}

/** Thrown at start for a malformed LONGRUN_TENANT_CLIENTS. */
export class TenantClientsError extends Error {
  override name = "TenantClientsError";
}

/**
 * Parses LONGRUN_TENANT_CLIENTS (a JSON object of client id → tenant name); unset or empty
 * is no named tenant. Malformed is an error at start, not a 401 on every request.
 */
export function parseTenantClients(raw: string | undefined): Map<string, string> {
  if (raw === undefined || raw.trim() === "") return new Map();
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new TenantClientsError("LONGRUN_TENANT_CLIENTS is not JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new TenantClientsError("LONGRUN_TENANT_CLIENTS must be an object of client id → tenant");
  }
  const out = new Map<string, string>();
  for (const [clientId, tenant] of Object.entries(parsed)) {
    if (typeof tenant !== "string" || tenant === "" || clientId === "") {
      throw new TenantClientsError(
        `LONGRUN_TENANT_CLIENTS: client ${JSON.stringify(clientId)} needs a tenant name`,
      );
    }
    out.set(clientId, tenant);
  }
  return out;
}
