/**
 * The one check of a webhook target (SPEC §2), used at submit (the guard answers 400) and
 * before every delivery attempt (the deliverer connects to the address it vetted): the URL
 * parses, its scheme is `https` (or `http` too when private targets are allowed), it carries
 * no credentials, its host resolves, and (unless private targets are allowed) every address
 * it resolves to is deliverable.
 */
import { lookup } from "node:dns/promises";
import ipaddr from "ipaddr.js";
import { InvalidRequestError } from "../../core/errors.ts";
import type { WebhookGuard } from "../../core/ports.ts";

/** ipaddr.js range names that are reachable on the public internet. */
const PUBLIC_RANGES = new Set(["unicast"]);

/**
 * True when `address` (IPv4 or IPv6, IPv4-mapped forms included) is a public unicast
 * address: not private, loopback, link-local (cloud metadata lives there), CGNAT,
 * multicast, unspecified, reserved or documentation space.
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let ip = ipaddr.parse(address);
  if (ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress()) {
    ip = (ip as ipaddr.IPv6).toIPv4Address();
  }
  return PUBLIC_RANGES.has(ip.range());
}

/**
 * Public addresses that still reach the provider's own services from inside a cloud, and so
 * are refused like the link-local metadata address: Azure's WireServer/IMDS relay.
 */
const DENIED_ADDRESSES = new Set(["168.63.129.16"]);

/**
 * The address rule: {@link isPublicAddress}, and additionally neither an IPv4-compatible
 * IPv6 address (`::a.b.c.d`, deprecated, which ipaddr.js calls unicast but some stacks
 * tunnel to the embedded IPv4 address) nor a {@link DENIED_ADDRESSES} entry.
 */
export function isDeliverableAddress(address: string): boolean {
  if (!isPublicAddress(address)) return false;
  const ip = ipaddr.parse(address);
  if (ip.kind() === "ipv6") {
    const parts = (ip as ipaddr.IPv6).parts;
    if (parts.slice(0, 6).every((p) => p === 0)) return false;
    return true;
  }
  return !DENIED_ADDRESSES.has(ip.toString());
}

/** Options of {@link vetTarget} and {@link createWebhookGuard}. */
export interface TargetCheckOptions {
  /** LONGRUN_WEBHOOK_ALLOW_PRIVATE=1: any address, and `http` as well as `https`. */
  allowPrivate: boolean;
  /** Resolves a host name to all its addresses; default `dns.lookup(host, {all: true})`. */
  resolve?: (host: string) => Promise<string[]>;
  /** Which addresses may be called when private ones are not allowed; default {@link isDeliverableAddress}. */
  isAllowedAddress?: (address: string) => boolean;
}

/** A target that passed the checks: where to connect and what to call it. */
export interface VettedTarget {
  url: URL;
  /** The host name (brackets of an IPv6 literal removed). */
  host: string;
  /** The address the connection goes to; the host resolved to it at check time. */
  address: string;
  port: number;
}

/**
 * Thrown by {@link vetTarget}. `retryable` says whether the refusal may pass later (a host
 * that does not resolve now may resolve at the next delivery try); submit refuses either way.
 */
export class TargetRefusedError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = "TargetRefusedError";
  }
}

async function resolveAll(host: string): Promise<string[]> {
  const found = await lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/**
 * Parses and checks a webhook URL and picks the address to connect to (the first one the
 * host resolved to; every one of them passed the address rule).
 * @throws TargetRefusedError when the URL may not be called.
 */
export async function vetTarget(raw: string, options: TargetCheckOptions): Promise<VettedTarget> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TargetRefusedError("webhook URL is not a valid URL", false);
  }
  const allowed = options.allowPrivate ? ["https:", "http:"] : ["https:"];
  if (!allowed.includes(url.protocol)) {
    throw new TargetRefusedError(
      `webhook URL scheme ${url.protocol} refused (${allowed.join(" or ")} only)`,
      false,
    );
  }
  if (url.username || url.password) {
    throw new TargetRefusedError("webhook URL must not carry credentials", false);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  let addresses: string[];
  if (ipaddr.isValid(host)) {
    addresses = [host];
  } else {
    try {
      addresses = await (options.resolve ?? resolveAll)(host);
    } catch (error) {
      throw new TargetRefusedError(
        `webhook host ${host} does not resolve: ${(error as Error).message}`,
        true,
      );
    }
  }
  const first = addresses[0];
  if (first === undefined) {
    throw new TargetRefusedError(`webhook host ${host} resolves to no address`, true);
  }
  if (!options.allowPrivate) {
    const isAllowed = options.isAllowedAddress ?? isDeliverableAddress;
    const refused = addresses.find((a) => !isAllowed(a));
    if (refused !== undefined) {
      throw new TargetRefusedError(
        `webhook host ${host} resolves to non-public address ${refused} (private, loopback, link-local and metadata addresses are refused)`,
        false,
      );
    }
  }
  const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  return { url, host, address: first, port };
}

/**
 * The submit-time guard: {@link vetTarget}, every refusal a 400 on `webhook.url`. Delivery
 * runs the same check again (DNS may have changed since).
 */
export function createWebhookGuard(options: TargetCheckOptions): WebhookGuard {
  return async (raw: string) => {
    try {
      await vetTarget(raw, options);
    } catch (error) {
      if (!(error instanceof TargetRefusedError)) throw error;
      throw new InvalidRequestError(`webhook.url refused: ${error.message}`, "webhook.url");
    }
  };
}
