/**
 * Drives `createApi(...).handle()` over the shared core fakes (test/helpers/fakes.ts): a
 * real SqliteRequestStore on ":memory:", a fake compute, result and log store.
 */
import type { QueueConfigInput } from "../../../functions/config/schema.ts";
import { dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { type ApiOptions, createApi } from "../../../functions/http/app.ts";
import { tokenAuthenticator } from "../../../functions/http/auth.ts";
import type { HttpRequest, HttpResponse } from "../../../functions/http/types.ts";
import { makeDeps, type TestHarness } from "../../helpers/fakes.ts";

export const TOKENS = { "tok-alice": "alice", "tok-bob": "bob" } as const;

export interface ApiHarness extends TestHarness {
  handle(request: HttpRequest): Promise<HttpResponse>;
  /** A JSON call as `alice` unless `token` says otherwise (null: no Authorization). */
  call(
    method: string,
    path: string,
    options?: {
      token?: string | null;
      body?: unknown;
      rawBody?: string | Uint8Array;
      headers?: Record<string, string>;
      query?: Record<string, string>;
    },
  ): Promise<Reply>;
  /** Submits `{input}` to `queue` as `alice` and returns the new request's id. */
  submit(queue?: string, body?: Record<string, unknown>, token?: string): Promise<string>;
  /** Starts the next QUEUED request of `queue` and reports it RUNNING. */
  startNext(queue: string): Promise<void>;
}

export interface Reply {
  status: number;
  headers: Record<string, string>;
  text: string;
  json: any;
}

export function makeApi(
  queues: Record<string, Partial<QueueConfigInput>> = {
    gpu: { maxQueued: 3, maxRunning: 1, timeoutSeconds: 3600, maxAttempts: 2 },
    cpu: {},
  },
  extra: Partial<ApiOptions> = {},
): ApiHarness {
  const h = makeDeps(queues);
  const api = createApi({
    deps: h.deps,
    authenticate: tokenAuthenticator(TOKENS),
    webhookSecret: async (tenant) => `whsec_${Buffer.from(`key-of-${tenant}`).toString("base64")}`,
    ...extra,
  });
  const call: ApiHarness["call"] = async (method, path, options = {}) => {
    const token = options.token === undefined ? "tok-alice" : options.token;
    const headers: Record<string, string> = { ...options.headers };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | Uint8Array | undefined = options.rawBody;
    if (body === undefined && options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["content-type"] = "application/json";
    }
    const res = await api.handle({ method, path, query: options.query ?? {}, headers, body });
    const text = typeof res.body === "string" ? res.body : Buffer.from(res.body).toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  return {
    ...h,
    handle: (r) => api.handle(r),
    call,
    async submit(queue = "gpu", body = { input: { n: 1 } }, token = "tok-alice") {
      const r = await call("POST", `/v1/queues/${queue}/requests`, { body, token });
      if (r.status !== 202) throw new Error(`submit answered ${r.status}: ${r.text}`);
      return r.json.id as string;
    },
    async startNext(queue) {
      await dispatchQueue(queue, h.deps);
      const active = await h.store.findActive(100);
      for (const r of active) {
        if (r.status === "STARTING") await h.compute.running(r.id, r.attempt);
      }
    },
  };
}
