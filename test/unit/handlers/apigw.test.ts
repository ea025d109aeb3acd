import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { APIGatewayProxyEventV2, APIGatewayProxyEventV2WithJWTAuthorizer } from "aws-lambda";
import { afterEach, describe, expect, it } from "vitest";
import { dashboardFromDir } from "../../../functions/dashboard/assets.ts";
import { writeDashboard } from "../../../functions/dashboard/build.ts";
import { fromApiGatewayV2, toApiGatewayV2 } from "../../../functions/handlers/apigw.ts";
import { createHttpHandler } from "../../../functions/handlers/http.ts";
import { parseTenantClients, TenantClientsError } from "../../../functions/http/auth.ts";
import { DASHBOARD_CSP } from "../../../functions/http/dashboard.ts";
import { makeDeps, type TestHarness } from "../../helpers/fakes.ts";

/** An HTTP API (payload v2) event as API Gateway sends it, with or without a JWT authorizer. */
function event(
  over: {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    query?: Record<string, string>;
    body?: string;
    isBase64Encoded?: boolean;
    claims?: Record<string, string> | null;
    lambdaAuthorizer?: Record<string, unknown>;
  } = {},
): APIGatewayProxyEventV2WithJWTAuthorizer | APIGatewayProxyEventV2 {
  const method = over.method ?? "GET";
  const path = over.path ?? "/v1/queues";
  const authorizer =
    over.lambdaAuthorizer !== undefined
      ? { lambda: over.lambdaAuthorizer }
      : over.claims === null
        ? undefined
        : {
            principalId: "",
            integrationLatency: 0,
            jwt: { claims: over.claims ?? { sub: "acme" }, scopes: [] },
          };
  return {
    version: "2.0",
    routeKey: "$default",
    rawPath: path,
    rawQueryString: over.query ? new URLSearchParams(over.query).toString() : "",
    headers: over.headers ?? { host: "abc.execute-api.us-east-1.amazonaws.com" },
    ...(over.query ? { queryStringParameters: over.query } : {}),
    requestContext: {
      accountId: "123456789012",
      apiId: "abc",
      ...(authorizer ? { authorizer } : {}),
      domainName: "abc.execute-api.us-east-1.amazonaws.com",
      domainPrefix: "abc",
      http: {
        method,
        path,
        protocol: "HTTP/1.1",
        sourceIp: "203.0.113.7",
        userAgent: "curl/8",
      },
      requestId: "id",
      routeKey: "$default",
      stage: "$default",
      time: "26/Nov/2026:10:00:00 +0000",
      timeEpoch: 1795687200000,
    },
    ...(over.body !== undefined ? { body: over.body } : {}),
    isBase64Encoded: over.isBase64Encoded ?? false,
  } as APIGatewayProxyEventV2WithJWTAuthorizer;
}

describe("fromApiGatewayV2", () => {
  it("decodes a base64 body to its bytes and keeps a plain body as text", () => {
    // Prepare
    const bytes = Buffer.from('{"input":"h\u00e9llo \ud83d\ude80"}', "utf8");

    // Act
    const encoded = fromApiGatewayV2(
      event({ method: "POST", body: bytes.toString("base64"), isBase64Encoded: true }),
    );
    const plain = fromApiGatewayV2(event({ method: "POST", body: '{"input":1}' }));
    const none = fromApiGatewayV2(event());

    // Assess
    expect(Buffer.from(encoded.body as Uint8Array).equals(bytes)).toBe(true);
    expect(plain.body).toBe('{"input":1}');
    expect(none.body).toBeUndefined();
  });

  it("lower-cases header names and carries method, raw path and query", () => {
    // Act
    const req = fromApiGatewayV2(
      event({
        method: "POST",
        path: "/v1/queues/gpu/requests",
        headers: { "Idempotency-Key": "k1", "Content-Type": "application/json" },
        query: { status: "QUEUED,RUNNING", limit: "5" },
      }),
    );

    // Assess
    expect(req.method).toBe("POST");
    expect(req.path).toBe("/v1/queues/gpu/requests");
    expect(req.headers).toEqual({ "idempotency-key": "k1", "content-type": "application/json" });
    expect(req.query).toEqual({ status: "QUEUED,RUNNING", limit: "5" });
  });

  it("takes claims only from the JWT authorizer's context", () => {
    // Act
    const withJwt = fromApiGatewayV2(event({ claims: { sub: "tenant-1", scope: "x" } }));
    const noAuthorizer = fromApiGatewayV2(
      event({
        claims: null,
        headers: { authorization: "Bearer eyJ.eyJ.sig", "x-claims": '{"sub":"evil"}', sub: "evil" },
      }),
    );
    const lambdaAuthorizer = fromApiGatewayV2(event({ lambdaAuthorizer: { sub: "evil" } }));

    // Assess
    expect(withJwt.verifiedClaims).toEqual({ sub: "tenant-1", scope: "x" });
    expect(noAuthorizer.verifiedClaims).toBeUndefined();
    expect(lambdaAuthorizer.verifiedClaims).toBeUndefined();
  });
});

describe("toApiGatewayV2", () => {
  it("passes a text body through unencoded", () => {
    // Act
    const out = toApiGatewayV2({
      status: 202,
      headers: { "content-type": "application/json", location: "/v1/requests/x" },
      body: '{"id":"x"}',
    });

    // Assess
    expect(out).toEqual({
      statusCode: 202,
      headers: { "content-type": "application/json", location: "/v1/requests/x" },
      body: '{"id":"x"}',
    });
  });

  it("base64-encodes a binary body and says so", () => {
    // Prepare
    const bytes = new Uint8Array([0, 255, 10, 13, 128]);

    // Act
    const out = toApiGatewayV2({ status: 200, headers: {}, body: bytes });

    // Assess
    expect(out.isBase64Encoded).toBe(true);
    expect(Buffer.from(out.body as string, "base64")).toEqual(Buffer.from(bytes));
  });
});

describe("createHttpHandler on API Gateway events", () => {
  let t: TestHarness | undefined;
  afterEach(() => t?.close());

  it("accepts a base64-encoded submit and names the tenant from the sub claim", async () => {
    // Prepare
    t = makeDeps({ gpu: {} });
    const handler = createHttpHandler(t.deps, "sub");
    const body = Buffer.from(JSON.stringify({ input: { text: "caf\u00e9" } })).toString("base64");

    // Act
    const res = await handler(
      event({
        method: "POST",
        path: "/v1/queues/gpu/requests",
        headers: { "Content-Type": "application/json" },
        body,
        isBase64Encoded: true,
        claims: { sub: "tenant-9" },
      }),
    );

    // Assess
    expect(res.statusCode).toBe(202);
    const created = JSON.parse(res.body as string);
    expect(created.input).toEqual({ text: "caf\u00e9" });
    expect((await t.store.get(created.id))?.tenant).toBe("tenant-9");
  });

  it("answers 401 when the configured claim is missing, whatever the headers say", async () => {
    // Prepare
    t = makeDeps({ gpu: {} });
    const handler = createHttpHandler(t.deps, "custom:tenant");

    // Act
    const res = await handler(
      event({ claims: { sub: "acme" }, headers: { authorization: "Bearer dev" } }),
    );

    // Assess
    expect(res.statusCode).toBe(401);
    expect(res.headers?.["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.body as string)).toMatchObject({ status: 401, code: "unauthorized" });
  });

  it("acts as a named tenant for a token of that tenant's client, as LONGRUN_TENANT_CLIENTS says", async () => {
    // Prepare: two named clients; a third client outside the map keeps its claim.
    t = makeDeps({ gpu: {} });
    const handler = createHttpHandler(t.deps, "sub", {
      tenantClients: parseTenantClients(JSON.stringify({ c1a2b3: "team-a", d4e5f6: "team-b" })),
    });
    const submit = (claims: Record<string, string>) =>
      handler(
        event({
          method: "POST",
          path: "/v1/queues/gpu/requests",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ input: {} }),
          claims,
        }),
      );

    // Act: Cognito client-credentials tokens carry the client id as `sub` and `client_id`.
    const a = await submit({ sub: "c1a2b3", client_id: "c1a2b3" });
    const b = await submit({ sub: "d4e5f6", client_id: "d4e5f6" });
    const other = await submit({ sub: "zz9", client_id: "zz9" });
    // A `sub` equal to a mapped id without the client_id claim is not that client's token.
    const forged = await submit({ sub: "c1a2b3" });

    // Assess
    const tenantOf = async (res: { body?: string }) =>
      (await t?.store.get(JSON.parse(res.body as string).id))?.tenant;
    expect(await tenantOf(a)).toBe("team-a");
    expect(await tenantOf(b)).toBe("team-b");
    expect(await tenantOf(other)).toBe("zz9");
    expect(await tenantOf(forged)).toBe("c1a2b3");
  });
});

describe("parseTenantClients", () => {
  it("reads a client id → tenant object and refuses anything else at start", () => {
    expect(parseTenantClients(undefined)).toEqual(new Map());
    expect(parseTenantClients("")).toEqual(new Map());
    expect(parseTenantClients('{"abc":"team-a"}')).toEqual(new Map([["abc", "team-a"]]));
    for (const bad of ["{", "[]", '"x"', '{"abc":1}', '{"abc":""}', '{"":"t"}']) {
      expect(() => parseTenantClients(bad), bad).toThrow(TenantClientsError);
    }
  });
});

describe("the dashboard on the HTTP Lambda", () => {
  let t: TestHarness | undefined;
  let dir: string | undefined;
  afterEach(() => {
    t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("serves the files the bundle holds without any claim, with the CSP", async () => {
    dir = mkdtempSync(join(tmpdir(), "longrun-ui-"));
    await writeDashboard(dir);
    t = makeDeps({ gpu: {} });
    const handler = createHttpHandler(t.deps, "sub", { dashboard: dashboardFromDir(dir) });
    const page = await handler(event({ path: "/ui/", claims: null, headers: {} }));
    expect(page.statusCode).toBe(200);
    expect(page.headers?.["content-security-policy"]).toBe(DASHBOARD_CSP);
    const js = await handler(event({ path: "/ui/app.js", claims: null, headers: {} }));
    expect(js.statusCode).toBe(200);
    const bytes = js.isBase64Encoded ? Buffer.from(String(js.body), "base64") : String(js.body);
    expect(bytes.length).toBe(readFileSync(join(dir, "app.js")).length);
    const root = await handler(event({ path: "/", claims: null, headers: {} }));
    expect([root.statusCode, root.headers?.location]).toEqual([302, "/ui/"]);
    // Data still needs the authorizer's claim.
    expect((await handler(event({ path: "/v1/queues", claims: null }))).statusCode).toBe(401);
  });
});
