/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): every delivery carries
 * `webhook-id`, `webhook-timestamp` (Unix seconds of the attempt) and
 * `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, keyed with
 * the tenant's secret `whsec_<base64 key>`. While a rotated-out secret still signs (SPEC §2:
 * 24 hours), the header holds one `v1,` entry per secret, space-separated, as the
 * specification allows; a receiver accepts the delivery when any entry verifies.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { ulid } from "ulidx";

/** Prefix of every secret this module makes and accepts. */
export const SECRET_PREFIX = "whsec_";

/** Bytes of key material in a new secret. */
export const SECRET_KEY_BYTES = 32;

/** Default tolerance of {@link verifyWebhook} between the timestamp and now (seconds). */
export const DEFAULT_TOLERANCE_SECONDS = 5 * 60;

/** The three headers that sign one delivery attempt. */
export interface SignatureHeaders {
  "webhook-id": string;
  "webhook-timestamp": string;
  "webhook-signature": string;
}

/** A new tenant secret: `whsec_` + base64 of {@link SECRET_KEY_BYTES} random bytes. */
export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(SECRET_KEY_BYTES).toString("base64");
}

/** A new delivery id, `msg_<ulid>`: made once per delivery and reused by every retry. */
export function newMessageId(): string {
  return `msg_${ulid()}`;
}

/**
 * The HMAC key inside `secret` (`whsec_<base64>`; a bare base64 key is accepted as well).
 * @throws Error when the key is not base64 or is empty.
 */
export function secretKey(secret: string): Buffer {
  const encoded = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) {
    throw new Error("webhook secret is not whsec_<base64 key>");
  }
  return Buffer.from(encoded, "base64");
}

function hmac(key: Buffer, id: string, timestamp: number | string, body: string): Buffer {
  return createHmac("sha256", key).update(`${id}.${timestamp}.${body}`, "utf8").digest();
}

/** `v1,<base64 signature>` of one attempt of delivery `id` at `timestamp` (Unix seconds). */
export function sign(secret: string, id: string, timestamp: number, body: string): string {
  return `v1,${hmac(secretKey(secret), id, timestamp, body).toString("base64")}`;
}

/**
 * The signature headers of one attempt; a retry passes the same `id` and a fresh `timestamp`.
 * With several secrets (current first), `webhook-signature` carries one entry per secret.
 * @throws Error when no secret is given.
 */
export function signatureHeaders(
  secrets: string | readonly string[],
  id: string,
  timestamp: number,
  body: string,
): SignatureHeaders {
  const keys = typeof secrets === "string" ? [secrets] : secrets;
  if (keys.length === 0) throw new Error("no webhook secret to sign with");
  return {
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": keys.map((k) => sign(k, id, timestamp, body)).join(" "),
  };
}

/** Outcome of {@link verifyWebhook}. */
export type VerifyResult = { ok: true } | { ok: false; reason: string };

/** Options of {@link verifyWebhook}. */
export interface VerifyOptions {
  /** How far the timestamp may be from now, either way (seconds); default 300. */
  toleranceSeconds?: number;
  /** Now in Unix seconds; default the system clock. */
  nowSeconds?: number;
}

function header(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  name: string,
): string | undefined {
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return Array.isArray(value) ? value[0] : value;
  }
  return undefined;
}

/**
 * Checks a received webhook as a receiver would: the headers are present, the timestamp is
 * within the tolerance (replay protection), and one of the space-separated `v1,` signatures
 * matches (compared in constant time). Header names are matched case-insensitively.
 */
export function verifyWebhook(
  secret: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: string,
  options: VerifyOptions = {},
): VerifyResult {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) return { ok: false, reason: "missing webhook headers" };
  if (!/^\d{1,15}$/.test(timestamp)) return { ok: false, reason: "malformed webhook-timestamp" };
  const now = options.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = options.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  if (Math.abs(now - Number(timestamp)) > tolerance) {
    return { ok: false, reason: "webhook-timestamp outside the tolerance" };
  }
  let key: Buffer;
  try {
    key = secretKey(secret);
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
  const expected = hmac(key, id, timestamp, body);
  for (const candidate of signatures.split(" ")) {
    const comma = candidate.indexOf(",");
    if (comma < 0 || candidate.slice(0, comma) !== "v1") continue;
    const given = Buffer.from(candidate.slice(comma + 1), "base64");
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true };
  }
  return { ok: false, reason: "no matching v1 signature" };
}
