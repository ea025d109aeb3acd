import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

/** How long an artifact URL stays valid (SPEC: at least 15 minutes). */
export const ARTIFACT_URL_TTL_SECONDS = 3600;

/** The shortest signing key accepted: an HMAC-SHA256 key of less than 32 bytes is weak. */
export const MIN_KEY_BYTES = 32;

/** A key file the server cannot use; the message names the file and what to do. */
export class KeyFileError extends Error {
  override name = "KeyFileError";
}

/**
 * Creates `path` holding `content`, atomically and only if it does not exist: written to a
 * temporary file, fsynced, then linked into place (link fails if another process created
 * the file meanwhile, where a rename would silently replace it) and the directory fsynced.
 * A crash at any step leaves either no file or the whole one, never a short key.
 * @returns false when the file already existed (someone else's content is kept).
 */
export function createFileAtomically(path: string, content: string): boolean {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${basename(path)}.tmp-${randomBytes(6).toString("hex")}`);
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  let created = true;
  try {
    linkSync(tmp, path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    created = false;
  } finally {
    unlinkSync(tmp);
  }
  const dirFd = openSync(dir, "r");
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
  return created;
}

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

  /**
   * Loads the signing key from `path`, creating it (0600, atomically) on first start.
   * @throws KeyFileError the file holds less than {@link MIN_KEY_BYTES} bytes of key: every
   *   URL signed with it could be forged, so the server must not start on it.
   */
  static keyFromFile(path: string): Buffer {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      createFileAtomically(path, randomBytes(MIN_KEY_BYTES).toString("base64"));
      text = readFileSync(path, "utf8");
    }
    const key = Buffer.from(text.trim(), "base64");
    if (key.length < MIN_KEY_BYTES) {
      throw new KeyFileError(
        `the artifact URL signing key ${path} holds ${key.length} bytes, fewer than ${MIN_KEY_BYTES}: ` +
          "refusing to sign URLs with it. Remove the file to have a new key made at start " +
          "(artifact URLs issued before stop working).",
      );
    }
    return key;
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
