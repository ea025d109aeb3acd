/**
 * The HTTP shapes the API speaks, free of any runtime's types, so that the embedded Node
 * server and an API Gateway v2 Lambda handler can both translate to and from them.
 */

/** One incoming HTTP request, already decoded from the runtime's own representation. */
export interface HttpRequest {
  /** Upper- or lower-case; the API compares it upper-cased. */
  method: string;
  /**
   * The URL path, still percent-encoded (e.g. `/v1/requests/req_01…`). A `?query` tail is
   * tolerated and parsed into `query` for adapters that only have the raw target.
   */
  path: string;
  /** Query parameters; for a repeated name, adapters pass the first value. */
  query?: Readonly<Record<string, string | undefined>> | URLSearchParams | undefined;
  /** Header names lower-cased; multiple values already joined with ", ". */
  headers: Readonly<Record<string, string | undefined>>;
  /** The raw body bytes (or text); undefined when the request has none. */
  body?: Uint8Array | string | undefined;
  /**
   * Claims a trusted front end already verified (API Gateway's JWT authorizer). Adapters fill
   * it only from that source, never from anything the client sent.
   */
  verifiedClaims?: Readonly<Record<string, unknown>> | undefined;
}

/** The answer to one {@link HttpRequest}. */
export interface HttpResponse {
  status: number;
  /** Header names lower-cased. */
  headers: Record<string, string>;
  body: string | Uint8Array;
}
