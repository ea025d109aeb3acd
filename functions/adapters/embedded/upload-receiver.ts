/**
 * The embedded server's upload PUT route, its counterpart of an S3 presigned PUT: no token,
 * the signature and expiry in the query are the credential. The body is streamed to a temp
 * file beside the upload's final name and renamed into place only when exactly the declared
 * number of bytes (and, when declared, the SHA-256) arrived: memory stays flat whatever the
 * size, and a refused PUT leaves nothing behind.
 */
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, mkdir, rename, rm } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { Clock, UploadStore } from "../../core/ports.ts";
import { UPLOAD_ID_PATTERN } from "../../core/upload.ts";
import type { ArtifactUrlSigner } from "./artifact-urls.ts";
import { UPLOAD_URL_PURPOSE, uploadUrlFields } from "./fs-files.ts";
import type { FsLayout } from "./fs-storage.ts";

/** `PUT /v1/uploads/<id>/content?expires=…&sig=…` */
export const UPLOAD_PUT_ROUTE = /^\/v1\/uploads\/([^/]+)\/content$/;

/** A PUT that must be refused; `status` and `code` go out as a problem. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const TITLES: Record<number, string> = {
  400: "Invalid request",
  403: "Forbidden",
  404: "Not found",
};

function problem(res: ServerResponse, refusal: Refusal, close: boolean): void {
  res.writeHead(refusal.status, {
    "content-type": "application/problem+json",
    // The body was not read: the connection cannot carry another request.
    ...(close ? { connection: "close" } : {}),
  });
  res.end(
    JSON.stringify({
      type: `https://longrun.dev/problems/${refusal.code}`,
      title: TITLES[refusal.status] ?? "Error",
      status: refusal.status,
      detail: refusal.message,
      code: refusal.code,
    }),
  );
}

export interface UploadReceiverOptions {
  layout: FsLayout;
  uploads: UploadStore;
  signer: ArtifactUrlSigner;
  clock: Clock;
}

/** Serves the upload PUT route; see the module comment. */
export class UploadReceiver {
  constructor(private readonly options: UploadReceiverOptions) {}

  /** Answers the PUT of `match` (a {@link UPLOAD_PUT_ROUTE} match); never rejects. */
  async handle(
    match: RegExpMatchArray,
    url: URL,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    let bodyRead = false;
    try {
      const id = decodeURIComponent(match[1] ?? "");
      const upload = UPLOAD_ID_PATTERN.test(id)
        ? await this.options.uploads.get(id, this.options.clock.now())
        : null;
      const signed =
        upload !== null &&
        this.options.signer.verifyFields(
          UPLOAD_URL_PURPOSE,
          uploadUrlFields(upload),
          url.searchParams.get("expires") ?? "",
          url.searchParams.get("sig") ?? "",
        );
      if (!upload || !signed) {
        throw new Refusal(403, "forbidden", "the upload URL is invalid or has expired");
      }
      const declared = req.headers["content-length"];
      if (declared !== undefined && declared !== String(upload.size)) {
        throw new Refusal(
          400,
          "invalid_request",
          `Content-Length must be ${upload.size}, the size this upload was created with`,
        );
      }
      bodyRead = true;
      await this.#receive(upload, req);
      const ready = await this.options.uploads.markReady(upload.id, this.options.clock.now());
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({ id: upload.id, size: upload.size, status: ready?.status ?? "READY" }),
      );
    } catch (error) {
      const refusal =
        error instanceof Refusal
          ? error
          : new Refusal(400, "invalid_request", `the upload failed: ${(error as Error).message}`);
      if (res.headersSent || req.destroyed) res.destroy();
      else problem(res, refusal, !bodyRead || !req.readableEnded);
    }
  }

  /** Streams the body to a temp file and renames it into place once it is whole. */
  async #receive(
    upload: { id: string; size: number; sha256: string | null },
    req: IncomingMessage,
  ): Promise<void> {
    const dir = this.options.layout.uploadsDir();
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.tmp-${upload.id}-${randomBytes(6).toString("hex")}`);
    const hash = upload.sha256 ? createHash("sha256") : null;
    let received = 0;
    try {
      await pipeline(
        req,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            received += chunk.length;
            if (received > upload.size) {
              throw new Refusal(400, "invalid_request", `more than ${upload.size} bytes were sent`);
            }
            hash?.update(chunk);
            yield chunk;
          }
        },
        createWriteStream(tmp, { flags: "wx", mode: 0o600 }),
      );
      if (received !== upload.size) {
        throw new Refusal(
          400,
          "invalid_request",
          `${received} bytes arrived; this upload takes exactly ${upload.size}`,
        );
      }
      if (hash && hash.digest("hex") !== upload.sha256) {
        throw new Refusal(400, "invalid_request", "the bytes do not match the declared sha256");
      }
      // Read-only from here on: requests hard-link it, and their jobs must not change it.
      await chmod(tmp, 0o444);
      await rename(tmp, this.options.layout.uploadFile(upload.id));
    } catch (error) {
      await rm(tmp, { force: true });
      throw error;
    }
  }
}
