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
 * The delivery-time address rule: {@link isPublicAddress}, and additionally neither an
 * IPv4-compatible IPv6 address (`::a.b.c.d`, deprecated, which ipaddr.js calls unicast but
 * some stacks tunnel to the embedded IPv4 address) nor a {@link DENIED_ADDRESSES} entry.
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

export interface WebhookGuardOptions {
  /** LONGRUN_WEBHOOK_ALLOW_PRIVATE=1: any scheme-valid URL, any address (local development). */
  allowPrivate: boolean;
  /** Resolves a host name to its addresses; injectable for tests. */
  resolve?: (host: string) => Promise<string[]>;
}

async function resolveAll(host: string): Promise<string[]> {
  const found = await lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
}

/**
 * Builds the submit-time check of a webhook target: `https` only, and every address the host
 * resolves to must be public. Delivery checks the address again (DNS may change).
 */
export function createWebhookGuard(options: WebhookGuardOptions): WebhookGuard {
  const resolve = options.resolve ?? resolveAll;
  return async (raw: string) => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new InvalidRequestError("webhook.url is not a valid URL", "webhook.url");
    }
    if (options.allowPrivate) {
      if (url.protocol !== "https:" && url.protocol !== "http:") {
        throw new InvalidRequestError("webhook.url must be an http(s) URL", "webhook.url");
      }
      return;
    }
    if (url.protocol !== "https:") {
      throw new InvalidRequestError("webhook.url must use https", "webhook.url");
    }
    if (url.username || url.password) {
      throw new InvalidRequestError("webhook.url must not carry credentials", "webhook.url");
    }
    const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
    let addresses: string[];
    if (ipaddr.isValid(host)) {
      addresses = [host];
    } else {
      try {
        addresses = await resolve(host);
      } catch {
        throw new InvalidRequestError(
          `webhook.url host ${JSON.stringify(host)} does not resolve`,
          "webhook.url",
        );
      }
    }
    if (addresses.length === 0 || !addresses.every(isDeliverableAddress)) {
      throw new InvalidRequestError(
        "webhook.url must resolve to public addresses only (private, loopback, link-local and metadata addresses are refused)",
        "webhook.url",
      );
    }
  };
}
