/**
 * The dashboard's only way to the server: the public API with the tenant's bearer token.
 * The token lives in this tab's sessionStorage (never a URL or a cookie), so it is gone
 * when the tab closes and no other site can make the browser send it.
 */

const TOKEN_KEY = "longrun.token";

export function storedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An RFC 9457 problem answer, with the detail a person should read. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(detail);
  }
}

/** Calls the API; resolves with the JSON body, rejects with an {@link ApiProblem}. */
export async function api<T>(
  token: string,
  path: string,
  init: { method?: string; body?: unknown } = {},
): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(path, {
      method: init.method ?? "GET",
      headers,
      ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiProblem(0, "network", "the server cannot be reached");
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text === "" ? null : JSON.parse(text);
  } catch {
    body = null;
  }
  if (!res.ok) {
    const p = (body ?? {}) as { code?: string; detail?: string; title?: string };
    throw new ApiProblem(
      res.status,
      p.code ?? "http_error",
      p.detail ?? p.title ?? `the server answered ${res.status}`,
    );
  }
  return body as T;
}

// ---- the shapes the dashboard reads (SPEC §2; optional fields come from newer servers) ----

export interface Progress {
  current: number;
  total: number | null;
  message: string | null;
  updatedAt: string;
}

export interface RequestJson {
  id: string;
  queue: string;
  status: string;
  priority: number;
  input?: unknown;
  metadata: Record<string, string>;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  attempt: number;
  maxAttempts: number;
  cancelRequested: boolean;
  position: number | null;
  progress: Progress | null;
  error: { code: string; message: string } | null;
  waitReason?: string | null;
  waitDetail?: string | null;
  estimatedStartAt?: string | null;
  retryOf?: string | null;
  files?: Record<string, { size: number }>;
}

export interface TenantUsage {
  queued: number;
  running: number;
  maxQueued: number;
  maxRunning: number;
}

export interface QueueJson {
  name: string;
  maxQueued: number;
  maxRunning: number;
  queued: number;
  running: number;
  tenant?: TenantUsage;
}

export interface QueueStatsJson {
  queue: string;
  from: string;
  samples: { at: string; queued: number; running: number }[];
  waits: { at: string; seconds: number }[];
}

export interface ResultJson {
  id: string;
  output: unknown;
  artifacts: { name: string; size: number; url: string }[];
}

export const STATUSES = [
  "QUEUED",
  "STARTING",
  "RUNNING",
  "SUCCEEDED",
  "FAILED",
  "CANCELLED",
  "EXPIRED",
] as const;

export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"]);
export const RETRYABLE = new Set(["FAILED", "CANCELLED", "EXPIRED"]);
