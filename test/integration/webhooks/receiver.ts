/**
 * A real webhook receiver on loopback for the webhook tests: http or https (certificate made
 * with the `openssl` command), recording every request it gets and answering as told.
 */
import { execFileSync } from "node:child_process";
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  method: string;
  url: string;
  /** The receiver's own address the connection came in on. */
  localAddress: string;
  at: number;
}

/** How to answer the n-th request (0-based): a status, or "hang" to never answer. */
export type Answer = number | "hang" | { status: number; headers: Record<string, string> };

export interface Receiver {
  received: Received[];
  port: number;
  /** Base URL on the address it listens on. */
  url: string;
  answer: (n: number, req: Received) => Answer;
  /** Resolves once `count` requests have arrived. */
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface Tls {
  key: string;
  cert: string;
}

/**
 * A self-signed certificate for `hooks.test` and 127.0.0.1, made with the `openssl` command.
 * @throws Error saying so when openssl is missing: the TLS delivery tests must run, not skip
 *   (.ci/run installs it).
 */
export function makeCertificate(): Tls {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
  } catch {
    throw new Error(
      "the TLS webhook delivery tests need the openssl command (apt-get install openssl)",
    );
  }
  const dir = mkdtempSync(join(tmpdir(), "longrun-webhook-tls-"));
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=hooks.test",
        "-addext",
        "subjectAltName=DNS:hooks.test,IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    return {
      key: readFileSync(join(dir, "key.pem"), "utf8"),
      cert: readFileSync(join(dir, "cert.pem"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts a receiver on `host` (default 127.0.0.1), port `port` (default any). */
export async function startReceiver(
  options: {
    tls?: Tls;
    host?: string;
    port?: number;
    answer?: (n: number, req: Received) => Answer;
  } = {},
): Promise<Receiver> {
  const host = options.host ?? "127.0.0.1";
  const hanging = new Set<http.ServerResponse>();
  const waiters: { count: number; resolve: () => void }[] = [];
  const receiver: Receiver = {
    received: [],
    port: 0,
    url: "",
    answer: options.answer ?? (() => 200),
    waitFor(count, timeoutMs = 5000) {
      if (receiver.received.length >= count) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`receiver got ${receiver.received.length} of ${count}`)),
          timeoutMs,
        );
        waiters.push({
          count,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
    close: () =>
      new Promise((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  const handler: http.RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const got: Received = {
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        method: req.method ?? "",
        url: req.url ?? "",
        localAddress: req.socket.localAddress ?? "",
        at: Date.now(),
      };
      const n = receiver.received.length;
      receiver.received.push(got);
      for (const w of waiters.splice(0)) {
        if (receiver.received.length >= w.count) w.resolve();
        else waiters.push(w);
      }
      const answer = receiver.answer(n, got);
      if (answer === "hang") {
        hanging.add(res);
        return;
      }
      const { status, headers } =
        typeof answer === "number" ? { status: answer, headers: {} } : answer;
      res.writeHead(status, headers).end("ok");
    });
  };
  const server = options.tls
    ? https.createServer(options.tls, handler)
    : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  receiver.port = (server.address() as AddressInfo).port;
  receiver.url = `${options.tls ? "https" : "http"}://${host}:${receiver.port}`;
  return receiver;
}

/**
 * Standard Webhooks verification written from the specification text with node:crypto only
 * (independent of functions/webhooks/signing.ts): HMAC-SHA256 keyed with the base64 key after
 * `whsec_`, over `<webhook-id>.<webhook-timestamp>.<body>`, base64, against any `v1,` entry.
 */
export function independentVerify(
  secret: string,
  headers: http.IncomingHttpHeaders,
  body: string,
): boolean {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const sigs = headers["webhook-signature"];
  if (typeof id !== "string" || typeof ts !== "string" || typeof sigs !== "string") return false;
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest();
  return sigs.split(" ").some((entry) => {
    const [version, value] = entry.split(",");
    if (version !== "v1" || value === undefined) return false;
    const given = Buffer.from(value, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
