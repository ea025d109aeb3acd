import { Aws, Duration, Fn, Lazy, Names, RemovalPolicy, Stack } from "aws-cdk-lib";
import { AccessLogFormat } from "aws-cdk-lib/aws-apigateway";
import * as apigw from "aws-cdk-lib/aws-apigatewayv2";
import { HttpJwtAuthorizer } from "aws-cdk-lib/aws-apigatewayv2-authorizers";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import * as cognito from "aws-cdk-lib/aws-cognito";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as logs from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";
import { OPERATIONS, type Operation } from "../../functions/http/openapi.ts";

/** One route of SPEC §2 and whether it needs a token. */
export interface ApiRoute {
  readonly method: apigw.HttpMethod;
  readonly path: string;
  readonly public: boolean;
  /** One of the dashboard's static files (public, holding no data: every data call carries a token). */
  readonly dashboard?: true;
}

/**
 * The API Gateway routes of the operations the HTTP app serves (functions/http/openapi.ts is
 * the one route table: a route added there is deployed without a second edit here).
 *
 * - Public exactly where the operation needs no token (health, the document, the dashboard).
 * - The dashboard is every route outside `/v1/`: `/` and `/ui` redirect to `/ui/`, whose
 *   page and files are `/ui/{asset}`.
 * - API Gateway matches a path without its trailing slash, so `/ui/` is served by the `/ui`
 *   route (the app tells the two apart) and gets no route of its own.
 */
export function apiRoutes(operations: readonly Operation[]): ApiRoute[] {
  return operations
    .filter((op) => op.path === "/" || !op.path.endsWith("/"))
    .map((op) => ({
      method: apigw.HttpMethod[op.method],
      path: op.path,
      public: !op.auth,
      ...(op.path.startsWith("/v1/") ? {} : { dashboard: true as const }),
    }));
}

/** The routes of SPEC §2 (v1) and the dashboard. Only health, the OpenAPI document and the dashboard's files are public. */
export const API_ROUTES: readonly ApiRoute[] = apiRoutes(OPERATIONS);

/** OAuth scope a Cognito machine client needs for the API (`<resource server>/<scope>`). */
export const API_SCOPE = { resourceServer: "longrun", scope: "api" } as const;

/** Props of {@link Api}. */
export interface ApiProps {
  /** The HTTP handler behind every route. */
  readonly handler: lambda.IFunction;
  /**
   * Who issues tokens. Default: a Cognito user pool made here with one machine client
   * (client-credentials grant). `external`: any OIDC issuer, e.g. Auth0 or Okta.
   */
  readonly auth:
    | { readonly kind: "cognito"; readonly domainPrefix?: string | undefined }
    | { readonly kind: "external"; readonly issuer: string; readonly audience: string[] };
  /**
   * Named tenants (Cognito auth only): one machine client each, and the caller's tenant is
   * the name of the client its token was issued to ({@link tenantClientsJson}). Empty: one
   * machine client whose id is the tenant.
   */
  readonly tenants?: readonly string[];
  /** Stage throttling: steady requests per second and burst. */
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number };
  readonly logRetention: logs.RetentionDays;
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The public face: an API Gateway HTTP API with the routes of SPEC §2 on one Lambda
 * integration, a JWT authorizer on every route but health and the OpenAPI document, stage
 * throttling and JSON access logs. By default it also owns the Cognito user pool that
 * issues the tokens (machine-to-machine; the tenant is the client's `sub`).
 */
export class Api extends Construct {
  readonly httpApi: apigw.HttpApi;
  readonly stage: apigw.HttpStage;
  readonly accessLogs: logs.LogGroup;
  /** Set with the default Cognito auth. */
  readonly userPool?: cognito.UserPool;
  /**
   * The first machine client (the first named tenant's, or one whose client id is the
   * tenant); add more with {@link addMachineClient}.
   */
  readonly machineClient?: cognito.UserPoolClient;
  /** Every machine client, by construct id; the authorizer's audience is all of them. */
  readonly machineClients: cognito.UserPoolClient[] = [];
  /** Named tenants' clients, by tenant name. */
  readonly tenantClients = new Map<string, cognito.UserPoolClient>();
  /** Token endpoint of the Cognito domain. */
  readonly tokenUrl?: string;
  /** The unauthenticated routes (health, OpenAPI document). */
  readonly publicRoutes: apigw.HttpRoute[] = [];
  /** The dashboard's unauthenticated routes (static files and redirects). */
  readonly dashboardRoutes: apigw.HttpRoute[] = [];
  private readonly scope?: cognito.OAuthScope;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    let authorizer: apigw.IHttpRouteAuthorizer;
    let scopes: string[] = [];
    if (props.auth.kind === "cognito") {
      this.userPool = new cognito.UserPool(this, "UserPool", {
        selfSignUpEnabled: false,
        signInAliases: { username: true },
        // Tenants are machine clients; should people ever sign in, they get a strong policy
        // and a second factor from the start.
        passwordPolicy: {
          minLength: 14,
          requireLowercase: true,
          requireUppercase: true,
          requireDigits: true,
          requireSymbols: true,
        },
        mfa: cognito.Mfa.REQUIRED,
        mfaSecondFactor: { otp: true, sms: false },
        accountRecovery: cognito.AccountRecovery.NONE,
        deletionProtection: (props.removalPolicy ?? RemovalPolicy.RETAIN) === RemovalPolicy.RETAIN,
        removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      });
      const apiScope = new cognito.ResourceServerScope({
        scopeName: API_SCOPE.scope,
        scopeDescription: "Use the longrun API as this client's tenant",
      });
      const server = this.userPool.addResourceServer("ResourceServer", {
        identifier: API_SCOPE.resourceServer,
        scopes: [apiScope],
      });
      this.scope = cognito.OAuthScope.resourceServer(server, apiScope);
      // A hosted-domain prefix is global per region: the account id keeps two accounts
      // apart and the construct hash two stacks of one account.
      const domainPrefix =
        props.auth.domainPrefix ??
        Fn.join("-", ["longrun", Aws.ACCOUNT_ID, Names.uniqueId(this).slice(-8).toLowerCase()]);
      const domain = this.userPool.addDomain("Domain", { cognitoDomain: { domainPrefix } });
      this.tokenUrl = `${domain.baseUrl()}/oauth2/token`;
      const tenants = props.tenants ?? [];
      this.machineClient =
        tenants.length === 0
          ? this.addMachineClient("MachineClient")
          : tenants.map((tenant) => this.addMachineClient(`Tenant-${tenant}`, tenant))[0];
      // Cognito access tokens carry no `aud`: API Gateway checks their `client_id` against
      // the audience. Lazy, so clients added after this point (addMachineClient) are in it
      // too; the user-pool authorizer would fix the list at its first route.
      authorizer = new HttpJwtAuthorizer(
        "Jwt",
        `https://cognito-idp.${Stack.of(this).region}.amazonaws.com/${this.userPool.userPoolId}`,
        {
          jwtAudience: Lazy.list({
            produce: () => this.machineClients.map((c) => c.userPoolClientId),
          }),
        },
      );
      scopes = [this.scope.scopeName];
    } else {
      authorizer = new HttpJwtAuthorizer("Jwt", props.auth.issuer, {
        jwtAudience: props.auth.audience,
      });
    }

    const integration = new HttpLambdaIntegration("Handler", props.handler, {
      payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
    });
    this.httpApi = new apigw.HttpApi(this, "HttpApi", {
      description: "longrun: asynchronous requests for long GPU jobs",
      createDefaultStage: false,
      // Any route added later without an authorizer is protected too.
      defaultAuthorizer: authorizer,
    });
    // Scopes go on protected routes only: API Gateway refuses scopes on a route without a
    // JWT authorizer, so they cannot be an API-wide default.
    const protectedRoute = {
      authorizer,
      ...(scopes.length > 0 ? { authorizationScopes: scopes } : {}),
    };
    for (const route of API_ROUTES) {
      const added = this.httpApi.addRoutes({
        path: route.path,
        methods: [route.method],
        integration,
        ...(route.public ? { authorizer: new apigw.HttpNoneAuthorizer() } : protectedRoute),
      });
      if (route.dashboard) this.dashboardRoutes.push(...added);
      else if (route.public) this.publicRoutes.push(...added);
    }
    // Unknown routes reach the handler too (behind the authorizer), so callers get the same
    // problem+json 404 as everywhere else instead of API Gateway's own body.
    new apigw.HttpRoute(this, "DefaultRoute", {
      httpApi: this.httpApi,
      routeKey: apigw.HttpRouteKey.DEFAULT,
      integration,
      ...protectedRoute,
    });

    this.accessLogs = new logs.LogGroup(this, "AccessLogs", {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
    });
    this.stage = new apigw.HttpStage(this, "Stage", {
      httpApi: this.httpApi,
      stageName: "$default",
      autoDeploy: true,
      throttle: props.throttle,
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: "$context.requestId",
            ip: "$context.identity.sourceIp",
            time: "$context.requestTime",
            method: "$context.httpMethod",
            route: "$context.routeKey",
            path: "$context.path",
            status: "$context.status",
            latencyMs: "$context.responseLatency",
            integrationError: "$context.integrationErrorMessage",
            authorizerError: "$context.authorizer.error",
            tenant: "$context.authorizer.claims.sub",
          }),
        ),
      },
    });
  }

  /** Base URL of the API (no trailing slash). */
  get url(): string {
    return Fn.join("", [
      "https://",
      this.httpApi.apiId,
      ".execute-api.",
      Stack.of(this).region,
      ".",
      Stack.of(this).urlSuffix,
    ]);
  }

  /**
   * Another machine client of the user pool, accepted by the authorizer. With `tenant`, its
   * callers are that tenant (by name, {@link tenantClientsJson}); without, the tenant is the
   * client id. Tokens last an hour; the client secret is read from Cognito, never from the
   * template.
   */
  addMachineClient(id: string, tenant?: string): cognito.UserPoolClient {
    if (!this.userPool || !this.scope) {
      throw new Error("addMachineClient needs the default Cognito auth");
    }
    if (tenant !== undefined && this.tenantClients.has(tenant)) {
      throw new Error(`tenant ${tenant} already has a machine client`);
    }
    const client = this.userPool.addClient(id, {
      ...(tenant !== undefined ? { userPoolClientName: `longrun-${tenant}` } : {}),
      generateSecret: true,
      authFlows: {},
      oAuth: { flows: { clientCredentials: true }, scopes: [this.scope] },
      accessTokenValidity: Duration.hours(1),
      enableTokenRevocation: true,
      preventUserExistenceErrors: true,
    });
    this.machineClients.push(client);
    if (tenant !== undefined) this.tenantClients.set(tenant, client);
    return client;
  }

  /**
   * `{"<client id>": "<tenant name>"}` of the named tenants' clients, as JSON (resolved at
   * synth, so clients added later are in it): the HTTP handler's LONGRUN_TENANT_CLIENTS.
   */
  get tenantClientsJson(): string {
    return Lazy.string({
      produce: () =>
        Stack.of(this).toJsonString(
          Object.fromEntries(
            [...this.tenantClients].map(([tenant, client]) => [client.userPoolClientId, tenant]),
          ),
        ),
    });
  }
}
