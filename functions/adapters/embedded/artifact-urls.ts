import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** How long an artifact URL stays valid (SPEC: at least 15 minutes). */
export const ARTIFACT_URL_TTL_SECONDS = 3600;

/**
 * Signs artifact download URLs for the embedded server, the way S3 presigned GETs work on
 * AWS: the URL carries an expiry and an HMAC over request id, name and expiry, so a plain
 * GET without an Authorization header can fetch it until it expires.
 */
export class ArtifactUrlSigner {
  readonly #key: Buffer;

  constructor(
    key: Buffer,
    private readonly baseUrl: () => string,
    private readonly now: () => number = Date.now,
  ) {
    this.#key = key;
  }

  /** Loads the signing key from `path`, creating it (0600) on first start. */
  static keyFromFile(path: string): Buffer {
    if (!existsSync(path)) {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, randomBytes(32).toString("base64"), { mode: 0o600, flag: "wx" });
    }
    return Buffer.from(readFileSync(path, "utf8").trim(), "base64");
  }

  #mac(requestId: string, name: string, expires: number): string {
    return createHmac("sha256", this.#key)
      .update(`${requestId}\n${name}\n${expires}`)
      .digest("base64url");
  }

  /** `/v1/artifacts/<id>/<name>?expires=<unix s>&sig=<mac>` on the server's base URL. */
  urlFor(requestId: string, name: string, ttlSeconds = ARTIFACT_URL_TTL_SECONDS): string {
    const expires = Math.floor(this.now() / 1000) + ttlSeconds;
    const path = `/v1/artifacts/${encodeURIComponent(requestId)}/${name.split("/").map(encodeURIComponent).join("/")}`;
    return `${this.baseUrl()}${path}?expires=${expires}&sig=${this.#mac(requestId, name, expires)}`;
  }

  /**
   * A signature over `purpose`, `fields` and `expires` (epoch seconds), for the server's other
   * signed URLs (uploads' PUTs). `purpose` keeps one kind of URL from passing as another.
   */
  signFields(purpose: string, fields: readonly string[], expires: number): string {
    return createHmac("sha256", this.#key)
      .update(["signed-url", purpose, ...fields, String(expires)].join("\n"))
      .digest("base64url");
  }

  /** True when `sig` is {@link signFields} of these values and `expires` has not passed. */
  verifyFields(purpose: string, fields: readonly string[], expires: string, sig: string): boolean {
    if (!/^\d{1,12}$/.test(expires)) return false;
    const exp = Number(expires);
    if (exp < Math.floor(this.now() / 1000)) return false;
    const want = Buffer.from(this.signFields(purpose, fields, exp));
    const got = Buffer.from(sig);
    return want.length === got.length && timingSafeEqual(want, got);
  }

  /** True when `sig` is this server's signature for the triple and it has not expired. */
  verify(requestId: string, name: string, expires: string, sig: string): boolean {
    if (!/^\d{1,12}$/.test(expires)) return false;
    const exp = Number(expires);
    if (exp < Math.floor(this.now() / 1000)) return false;
    const want = Buffer.from(this.#mac(requestId, name, exp));
    const got = Buffer.from(sig);
    return want.length === got.length && timingSafeEqual(want, got);
  }
}
