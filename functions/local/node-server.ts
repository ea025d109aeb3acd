import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import type { ArtifactUrlSigner } from "../adapters/embedded/artifact-urls.ts";
import type { OpenArtifact } from "../adapters/embedded/fs-storage.ts";
import { UPLOAD_PUT_ROUTE, type UploadReceiver } from "../adapters/embedded/upload-receiver.ts";
import type { HttpRequest, HttpResponse } from "../http/types.ts";

export interface NodeAdapterOptions {
  handle: (req: HttpRequest) => Promise<HttpResponse>;
  /** Bodies are read up to this many bytes plus one; the API answers 413 beyond it. */
  maxBodyBytes: number;
  /**
   * Serves the embedded backend's signed artifact URLs, opening files with `open`
   * (FsResultStore.openArtifact: null when there is no such artifact). Absent on the AWS
   * backend, whose artifact URLs are S3 presigned GETs: the route then does not exist.
   */
  artifacts?: ArtifactRoute;
  /**
   * Serves the embedded backend's signed upload PUTs, streaming the body to disk. Absent on
   * the AWS backend, whose upload URLs are S3 presigned PUTs.
   */
  uploads?: UploadReceiver;
  /**
   * Longest time an API request's body may take to arrive (default 60 s). It stands in for
   * Node's whole-request `requestTimeout`, which the server turns off so that an upload's
   * PUT may take as long as its bytes take; a body trickled slower is cut off.
   */
  bodyTimeoutMs?: number;
  log: (line: string) => void;
}

/** What the artifact download route needs. */
export interface ArtifactRoute {
  signer: ArtifactUrlSigner;
  open: (requestId: string, name: string) => Promise<OpenArtifact | null>;
}

const ARTIFACT_ROUTE = /^\/v1\/artifacts\/(req_[0-9A-Za-z]{26})\/(.+)$/;

/** Default of {@link NodeAdapterOptions.bodyTimeoutMs}. */
const BODY_TIMEOUT_MS = 60_000;

/**
 * Reads at most `limit` bytes of the body; the rest is discarded, not buffered. A body not
 * complete within `timeoutMs` closes the connection (null: nothing is answered). Plain
 * stream events rather than `for await`: the async iterator cost a few percent of a
 * submit's time (docs/design.md, submit path).
 */
function readBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let late = false;
    let settled = false;
    const timer = setTimeout(() => {
      late = true;
      req.destroy();
    }, timeoutMs);
    const finish = (error: unknown, body: Buffer | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (late) resolve(null);
      else if (error !== undefined) reject(error);
      else resolve(body);
    };
    req.on("data", (chunk: Buffer) => {
      if (size >= limit) return; // drain without keeping it
      const take = chunk.subarray(0, limit - size);
      chunks.push(take);
      size += take.length;
    });
    req.once("end", () =>
      finish(undefined, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size)),
    );
    req.once("error", (error) => finish(error, null));
    // Closed before its end (the client went away): as the stream iterator did, a failure.
    req.once("close", () => finish(new Error("the request closed before its body ended"), null));
  });
}

function send(res: ServerResponse, out: HttpResponse): void {
  res.writeHead(out.status, out.headers);
  res.end(out.body);
}

/**
 * Serves a signed artifact URL (the embedded counterpart of an S3 presigned GET): no
 * Authorization header, the signature and expiry in the query are the credential.
 */
async function serveArtifact(
  match: RegExpMatchArray,
  url: URL,
  res: ServerResponse,
  opts: ArtifactRoute,
): Promise<void> {
  const id = match[1] ?? "";
  let name: string;
  try {
    name = (match[2] ?? "").split("/").map(decodeURIComponent).join("/");
  } catch {
    name = "";
  }
  const ok =
    name !== "" &&
    opts.signer.verify(
      id,
      name,
      url.searchParams.get("expires") ?? "",
      url.searchParams.get("sig") ?? "",
    );
  if (!ok || name === "result.json") {
    res.writeHead(403, { "content-type": "application/problem+json" });
    res.end(
      JSON.stringify({
        type: "https://longrun.dev/problems/forbidden",
        title: "Forbidden",
        status: 403,
        detail: "the artifact URL is invalid or has expired",
        code: "forbidden",
      }),
    );
    return;
  }
  const artifact = await opts.open(id, name);
  if (!artifact) {
    res.writeHead(404, { "content-type": "application/problem+json" });
    res.end(
      JSON.stringify({
        type: "https://longrun.dev/problems/not_found",
        title: "Not Found",
        status: 404,
        detail: "artifact not found",
        code: "not_found",
      }),
    );
    return;
  }
  const { handle, size } = artifact;
  res.writeHead(200, {
    "content-type": "application/octet-stream",
    "content-length": String(size),
    "content-disposition": `attachment; filename="${encodeURIComponent(name.split("/").pop() ?? name)}"`,
  });
  if (size === 0) {
    await handle.close();
    res.end();
    return;
  }
  // Exactly the bytes fstat promised, from the descriptor that was checked. A read that
  // fails after the headers went out (an I/O error, a file truncated meanwhile) can only cut
  // the response short: pipeline destroys it, the client sees an incomplete body, and the
  // error stays here instead of becoming an unhandled 'error' event.
  const stream = handle.createReadStream({ start: 0, end: size - 1 });
  // A file truncated after fstat ends early without a read error; the promised length was
  // not sent, so the connection is closed rather than left waiting for the rest.
  stream.once("end", () => {
    if (stream.bytesRead < size) res.destroy();
  });
  try {
    await pipeline(stream, res);
  } catch {
    res.destroy();
  } finally {
    await handle.close().catch(() => {});
  }
}

/** The node:http request listener mounting the runtime-agnostic API. */
export function createRequestListener(opts: NodeAdapterOptions) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    void (async () => {
      // Prefixing (rather than resolving against a base) keeps "//x" a path, not a host.
      // One parse (canParse and then new URL parsed every request twice).
      let url: URL;
      try {
        url = new URL(`http://localhost${req.url ?? "/"}`);
      } catch {
        url = new URL("http://localhost/");
      }
      const artifact =
        req.method === "GET" && opts.artifacts ? url.pathname.match(ARTIFACT_ROUTE) : null;
      if (artifact && opts.artifacts) {
        await serveArtifact(artifact, url, res, opts.artifacts);
        return;
      }
      // Before readBody: an upload's body is streamed to disk, never read into memory.
      const upload =
        req.method === "PUT" && opts.uploads ? url.pathname.match(UPLOAD_PUT_ROUTE) : null;
      if (upload && opts.uploads) {
        await opts.uploads.handle(upload, url, req, res);
        return;
      }
      const body = await readBody(
        req,
        opts.maxBodyBytes + 1,
        opts.bodyTimeoutMs ?? BODY_TIMEOUT_MS,
      );
      if (body === null) return; // too slow: the connection is closed
      const headers: Record<string, string | undefined> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      }
      const query: Record<string, string | undefined> = {};
      for (const [k, v] of url.searchParams) query[k] ??= v;
      const out = await opts.handle({
        method: (req.method ?? "GET").toUpperCase(),
        path: url.pathname,
        query,
        headers,
        body: body.length > 0 ? body : undefined,
      });
      send(res, out);
    })().catch((error: unknown) => {
      opts.log(`unhandled error serving ${req.method} ${req.url}: ${String(error)}`);
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/problem+json" });
        res.end(
          JSON.stringify({
            type: "https://longrun.dev/problems/internal",
            title: "Internal Server Error",
            status: 500,
            detail: "an unexpected error occurred",
            code: "internal",
          }),
        );
      } else {
        res.destroy();
      }
    });
  };
}
