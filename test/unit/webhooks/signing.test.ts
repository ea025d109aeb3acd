/**
 * Standard Webhooks signing, checked against an implementation written here from the
 * specification text (node:crypto only, nothing imported from the module under test for the
 * checking side) and against the specification's published example vector.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ROTATION_OVERLAP_MS, signingSecrets } from "../../../functions/webhooks/outbox.ts";
import {
  generateSecret,
  newMessageId,
  SECRET_KEY_BYTES,
  sign,
  signatureHeaders,
  verifyWebhook,
} from "../../../functions/webhooks/signing.ts";

/**
 * The receiver side as the spec describes it: strip `whsec_`, base64-decode the key, HMAC-SHA256
 * over `${id}.${timestamp}.${body}`, base64, compare with each `v1,` entry of the header.
 */
function independentVerify(secret: string, headers: Record<string, string>, body: string): boolean {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const content = `${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`;
  const expected = createHmac("sha256", key).update(content).digest();
  return (headers["webhook-signature"] ?? "").split(" ").some((entry) => {
    const [version, sig] = entry.split(",");
    if (version !== "v1" || !sig) return false;
    const given = Buffer.from(sig, "base64");
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}

describe("Standard Webhooks signing", () => {
  it("matches the specification's published example", () => {
    // From the Standard Webhooks specification's example section.
    const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}');
    expect(sig).toBe("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  });

  it("matches a vector computed by hand here", () => {
    // key = the 32 bytes 0x00..0x1f; the signed content is spelled out literally.
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const secret = `whsec_${key.toString("base64")}`;
    expect(secret).toBe("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    const body = '{"type":"request.completed","data":{"id":"req_1"}}';
    const content = 'msg_01J.1700000000.{"type":"request.completed","data":{"id":"req_1"}}';
    const expected = createHmac("sha256", key).update(content, "utf8").digest("base64");
    expect(sign(secret, "msg_01J", 1700000000, body)).toBe(`v1,${expected}`);
  });

  it("produces headers an independent receiver accepts, and rejects tampering", () => {
    const secret = generateSecret();
    const id = newMessageId();
    const body = JSON.stringify({ type: "request.started", data: { id: "req_x", n: "é✓" } });
    const headers = { ...signatureHeaders(secret, id, 1_750_000_000, body) };
    expect(headers["webhook-id"]).toBe(id);
    expect(headers["webhook-timestamp"]).toBe("1750000000");
    expect(independentVerify(secret, headers, body)).toBe(true);
    expect(independentVerify(secret, headers, `${body} `)).toBe(false);
    expect(independentVerify(secret, { ...headers, "webhook-timestamp": "1750000001" }, body)).toBe(
      false,
    );
    expect(independentVerify(generateSecret(), headers, body)).toBe(false);
  });

  it("makes 32-byte secrets and msg_<ulid> ids, all different", () => {
    const a = generateSecret();
    const b = generateSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]+={0,2}$/);
    expect(Buffer.from(a.slice(6), "base64")).toHaveLength(SECRET_KEY_BYTES);
    expect(a).not.toBe(b);
    const ids = new Set(Array.from({ length: 100 }, newMessageId));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^msg_[0-9A-HJKMNP-TV-Z]{26}$/);
  });
});

describe("verifyWebhook", () => {
  const secret = generateSecret();
  const body = '{"type":"request.completed"}';
  const now = 1_750_000_000;
  const headers = { ...signatureHeaders(secret, "msg_1", now, body) };

  it("accepts a genuine delivery, headers in any case, among other signatures", () => {
    expect(verifyWebhook(secret, headers, body, { nowSeconds: now })).toEqual({ ok: true });
    const upper = {
      "Webhook-Id": headers["webhook-id"],
      "Webhook-Timestamp": headers["webhook-timestamp"],
      "Webhook-Signature": `v1,AAAA v2,zzz ${headers["webhook-signature"]}`,
    };
    expect(verifyWebhook(secret, upper, body, { nowSeconds: now + 299 })).toEqual({ ok: true });
  });

  it("refuses a wrong body, key, id, missing headers and stale or future timestamps", () => {
    const no = (r: ReturnType<typeof verifyWebhook>) => expect(r.ok).toBe(false);
    no(verifyWebhook(secret, headers, `${body}x`, { nowSeconds: now }));
    no(verifyWebhook(generateSecret(), headers, body, { nowSeconds: now }));
    no(verifyWebhook(secret, { ...headers, "webhook-id": "msg_2" }, body, { nowSeconds: now }));
    no(verifyWebhook(secret, { "webhook-id": "msg_1" }, body, { nowSeconds: now }));
    no(verifyWebhook(secret, headers, body, { nowSeconds: now + 301 }));
    no(verifyWebhook(secret, headers, body, { nowSeconds: now - 301 }));
    no(verifyWebhook(secret, headers, body, { nowSeconds: now + 60, toleranceSeconds: 30 }));
    no(verifyWebhook("whsec_not base64!", headers, body, { nowSeconds: now }));
    const truncated = {
      ...headers,
      "webhook-signature": headers["webhook-signature"].slice(0, 20),
    };
    no(verifyWebhook(secret, truncated, body, { nowSeconds: now }));
  });
});

describe("signing with two keys after a rotation", () => {
  const rotatedAt = 1_700_000_000_000;
  const stored = { secret: generateSecret(), previous: generateSecret(), rotatedAt };

  it("puts one v1 entry per key in webhook-signature, and either key verifies", () => {
    const body = '{"type":"request.completed"}';
    const headers: Record<string, string> = {
      ...signatureHeaders([stored.secret, stored.previous], "msg_2k", 1700000000, body),
    };
    const entries = (headers["webhook-signature"] ?? "").split(" ");
    expect(entries).toHaveLength(2);
    expect(entries[0]).toBe(sign(stored.secret, "msg_2k", 1700000000, body));
    expect(entries[1]).toBe(sign(stored.previous, "msg_2k", 1700000000, body));
    for (const key of [stored.secret, stored.previous]) {
      expect(independentVerify(key, headers, body)).toBe(true);
      expect(verifyWebhook(key, headers, body, { nowSeconds: 1700000000 })).toEqual({ ok: true });
    }
    expect(independentVerify(generateSecret(), headers, body)).toBe(false);
    expect(() => signatureHeaders([], "msg_2k", 1700000000, body)).toThrow(/no webhook secret/);
  });

  it("signs with the replaced key for 24 hours after the rotation, then with the new one only", () => {
    expect(signingSecrets(stored, rotatedAt)).toEqual([stored.secret, stored.previous]);
    expect(signingSecrets(stored, rotatedAt + ROTATION_OVERLAP_MS - 1)).toEqual([
      stored.secret,
      stored.previous,
    ]);
    expect(signingSecrets(stored, rotatedAt + ROTATION_OVERLAP_MS)).toEqual([stored.secret]);
    expect(
      signingSecrets({ secret: stored.secret, previous: null, rotatedAt: null }, rotatedAt),
    ).toEqual([stored.secret]);
    expect(ROTATION_OVERLAP_MS).toBe(24 * 3_600_000);
  });
});
