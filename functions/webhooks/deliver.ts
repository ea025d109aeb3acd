/**
 * One webhook delivery attempt, SSRF-safe: the target passes the one target check
 * (`vetTarget` of adapters/net/webhook-guard.ts) now, and the connection is made to the
 * vetted address itself, so a DNS answer that changes between the check and the connect
 * (DNS rebinding) cannot move it. Redirects are never followed.
 */
import http from "node:http";
import https from "node:https";
import ipaddr from "ipaddr.js";
import {
  type TargetCheckOptions,
  TargetRefusedError,
  type VettedTarget,
  vetTarget,
} from "../adapters/net/webhook-guard.ts";

/** What one attempt sends. */
export interface DeliveryRequest {
  url: string;
  /** JSON text, sent as is (the signature covers these exact bytes). */
  body: string;
  /** Extra headers, normally the Standard Webhooks signature headers. */
  headers: Readonly<Record<string, string>>;
}

/** What one attempt came to. */
export interface DeliveryResult {
  /** A 2xx answer arrived. */
  ok: boolean;
  /** The answer's status code, when there was an answer. */
  status?: number;
  /** Why the attempt failed. */
  error?: string;
  /**
   * Whether trying again may help. SPEC §2 retries every non-2xx answer, timeout and network
   * error; only a target this service refuses to call (bad URL, non-public address, non-https)
   * is not retryable.
   */
  retryable: boolean;
}

/** Options of {@link createDeliverer}. */
export interface DelivererOptions extends TargetCheckOptions {
  /** No answer within this many ms fails the attempt; default 10 000 (SPEC). */
  timeoutMs?: number;
  /** Extra trusted CA certificates (PEM) for https targets; default the system's. */
  ca?: string | Buffer | Array<string | Buffer>;
}

/** Sends one attempt; never throws (failures are results). */
export type Deliver = (request: DeliveryRequest) => Promise<DeliveryResult>;

/** The `user-agent` of every delivery. */
export const USER_AGENT = "longrun-webhooks/1";

/** SPEC §2: no answer in 10 s is a failure. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Builds the {@link Deliver} function: vet the target, then POST the body to the vetted
 * address with `content-type: application/json`, `user-agent: longrun-webhooks/1`, the given
 * headers, `Host` = the URL's host and (https) SNI and certificate check against the host
 * name. A 2xx answer is success; 3xx is a failure like any other non-2xx (no redirects).
 */
export function createDeliverer(options: DelivererOptions): Deliver {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return async (request) => {
    let target: VettedTarget;
    let timer: NodeJS.Timeout | undefined;
    try {
      // The name lookup gets the same time as the answer, so a whole try is bounded
      // (callers lease a request's order for longer than a try can take).
      target = await Promise.race([
        vetTarget(request.url, options),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new TargetRefusedError(`webhook host lookup took over ${timeoutMs} ms`, true)),
            timeoutMs,
          );
        }),
      ]);
    } catch (error) {
      if (error instanceof TargetRefusedError) {
        return { ok: false, error: error.message, retryable: error.retryable };
      }
      return { ok: false, error: String(error), retryable: true };
    } finally {
      clearTimeout(timer);
    }
    return post(target, request, timeoutMs, options.ca);
  };
}

function post(
  target: VettedTarget,
  request: DeliveryRequest,
  timeoutMs: number,
  ca: DelivererOptions["ca"],
): Promise<DeliveryResult> {
  const { url, host, address, port } = target;
  const body = Buffer.from(request.body, "utf8");
  const headers: Record<string, string | number> = {
    ...request.headers,
    "content-type": "application/json",
    "user-agent": USER_AGENT,
    "content-length": body.length,
    host: url.host,
  };
  const isHttps = url.protocol === "https:";
  const family = ipaddr.parse(address).kind() === "ipv6" ? 6 : 4;
  const common: http.RequestOptions = {
    method: "POST",
    // The vetted address itself: nothing resolves the name again before the connect.
    host: address,
    family,
    port,
    path: `${url.pathname}${url.search}`,
    headers,
    // A fresh connection per attempt: a pooled socket could lead to another address.
    agent: false,
    // Belt and braces: should anything look the name up, it gets the vetted address.
    lookup: (_hostname, opts, callback) => {
      const cb = callback as unknown as (
        err: Error | null,
        address: string | { address: string; family: number }[],
        family?: number,
      ) => void;
      if ((opts as { all?: boolean }).all) cb(null, [{ address, family }]);
      else cb(null, address, family);
    },
  };
  return new Promise<DeliveryResult>((resolve) => {
    let settled = false;
    const finish = (result: DeliveryResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = isHttps
      ? https.request({
          ...common,
          // SNI and the certificate check use the name, never the address (RFC 6066).
          ...(ipaddr.isValid(host) ? {} : { servername: host }),
          ...(ca !== undefined ? { ca } : {}),
        })
      : http.request(common);
    const timer = setTimeout(() => {
      finish({ ok: false, error: `no answer within ${timeoutMs} ms`, retryable: true });
      req.destroy();
    }, timeoutMs);
    req.on("response", (res) => {
      const status = res.statusCode ?? 0;
      // Drain and close; the answer's body means nothing to the sender.
      res.resume();
      res.on("error", () => {});
      req.destroy();
      if (status >= 200 && status < 300) {
        finish({ ok: true, status, retryable: false });
      } else if (status >= 300 && status < 400) {
        finish({
          ok: false,
          status,
          error: `HTTP ${status}: redirects are not followed`,
          retryable: true,
        });
      } else {
        finish({ ok: false, status, error: `HTTP ${status}`, retryable: true });
      }
    });
    req.on("error", (error) => {
      finish({ ok: false, error: `${address}: ${error.message}`, retryable: true });
    });
    req.end(body);
  });
}
