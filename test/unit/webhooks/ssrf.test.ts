/**
 * The delivery-time SSRF rules: every refused address form, IPv4 and IPv6, literal or behind
 * a name, and the scheme rule. `vetTarget` is the check `createDeliverer` runs before any
 * connection (the integration tests show no connection is made when it refuses).
 */
import { describe, expect, it } from "vitest";
import {
  isDeliverableAddress,
  TargetRefusedError,
  vetTarget,
} from "../../../functions/adapters/net/webhook-guard.ts";

const strict = { allowPrivate: false };

async function refusal(url: string, resolve?: (host: string) => Promise<string[]>) {
  try {
    await vetTarget(url, resolve ? { ...strict, resolve } : strict);
  } catch (error) {
    expect(error).toBeInstanceOf(TargetRefusedError);
    return error as TargetRefusedError;
  }
  throw new Error(`${url} was accepted`);
}

/** [label, URL] of every literal form that must be refused. */
const REFUSED_LITERALS: [string, string][] = [
  ["IPv4 loopback", "https://127.0.0.1/hook"],
  ["IPv4 loopback, other /8 address", "https://127.8.9.10/"],
  ["10/8", "https://10.0.0.1/"],
  ["10/8 top", "https://10.255.255.254/"],
  ["172.16/12 bottom", "https://172.16.0.1/"],
  ["172.16/12 top", "https://172.31.255.254/"],
  ["192.168/16", "https://192.168.1.1/"],
  ["cloud metadata 169.254.169.254", "https://169.254.169.254/latest/meta-data/"],
  ["link-local 169.254/16", "https://169.254.1.1/"],
  ["CGNAT 100.64/10", "https://100.64.0.1/"],
  ["CGNAT (Alibaba metadata)", "https://100.100.100.200/"],
  ["unspecified 0.0.0.0", "https://0.0.0.0/"],
  ["this-network 0/8", "https://0.1.2.3/"],
  ["multicast 224.0.0.1", "https://224.0.0.1/"],
  ["broadcast", "https://255.255.255.255/"],
  ["reserved 240/4", "https://240.0.0.1/"],
  ["benchmarking 198.18/15", "https://198.18.0.1/"],
  ["Azure WireServer", "https://168.63.129.16/"],
  ["decimal IPv4 (2130706433)", "https://2130706433/"],
  ["hex IPv4 (0x7f.0.0.1)", "https://0x7f.0.0.1/"],
  ["octal IPv4 (0177.0.0.1)", "https://0177.0.0.1/"],
  ["short IPv4 (127.1)", "https://127.1/"],
  ["hex metadata (0xa9fea9fe)", "https://0xa9fea9fe/"],
  ["IPv6 loopback ::1", "https://[::1]/"],
  ["IPv6 unspecified ::", "https://[::]/"],
  ["IPv6 link-local fe80::1", "https://[fe80::1]/"],
  ["IPv6 ULA fc00::1", "https://[fc00::1]/"],
  ["IPv6 ULA fdff::1", "https://[fdff:ffff::1]/"],
  ["AWS IPv6 metadata fd00:ec2::254", "https://[fd00:ec2::254]/"],
  ["IPv6 multicast", "https://[ff02::1]/"],
  ["mapped ::ffff:127.0.0.1", "https://[::ffff:127.0.0.1]/"],
  ["mapped ::ffff:169.254.169.254", "https://[::ffff:169.254.169.254]/"],
  ["mapped ::ffff:10.0.0.1", "https://[::ffff:10.0.0.1]/"],
  ["IPv4-compatible ::127.0.0.1", "https://[::127.0.0.1]/"],
  ["NAT64 64:ff9b::127.0.0.1", "https://[64:ff9b::7f00:1]/"],
  ["6to4 of 127.0.0.1", "https://[2002:7f00:1::1]/"],
  ["documentation 2001:db8::", "https://[2001:db8::1]/"],
];

describe("webhook delivery target checks (SSRF)", () => {
  it("WHATWG URL parsing turns numeric IPv4 forms into dotted loopback", () => {
    for (const u of ["http://2130706433/", "http://0x7f.0.0.1/", "http://0177.0.0.1/"]) {
      expect(new URL(u).hostname).toBe("127.0.0.1");
    }
  });

  it.each(REFUSED_LITERALS)("refuses %s", async (_label, url) => {
    const resolve = async () => {
      throw new Error("a literal address must not be resolved");
    };
    const error = await refusal(url, resolve);
    expect(error.message).toMatch(/non-public address/);
    expect(error.retryable).toBe(false);
  });

  it("refuses the same forms as http:// (scheme first)", async () => {
    for (const url of ["http://2130706433/", "http://0x7f.0.0.1/", "http://[::1]/"]) {
      const error = await refusal(url);
      expect(error.message).toMatch(/scheme http: refused/);
    }
  });

  it("refuses a public address over http, other schemes, credentials and junk", async () => {
    for (const url of ["http://93.184.216.34/", "ftp://93.184.216.34/", "file:///etc/passwd"]) {
      expect((await refusal(url)).message).toMatch(/scheme/);
    }
    expect((await refusal("https://user:pw@93.184.216.34/")).message).toMatch(/credentials/);
    expect((await refusal("not a url")).message).toMatch(/not a valid URL/);
  });

  it("refuses a name that resolves to a private address, or to any private among public", async () => {
    const names: Record<string, string[]> = {
      "internal.example": ["10.0.0.7"],
      "metadata.example": ["169.254.169.254"],
      "mixed.example": ["93.184.216.34", "127.0.0.1"],
      "v6.example": ["2606:4700::1111", "fd00:ec2::254"],
      "mapped.example": ["::ffff:192.168.0.1"],
    };
    const resolve = async (host: string) => names[host] ?? [];
    for (const host of Object.keys(names)) {
      const error = await refusal(`https://${host}/hook`, resolve);
      expect(error.message).toMatch(/non-public address/);
    }
    const none = await refusal("https://empty.example/", resolve);
    expect(none.retryable).toBe(true);
    const failing = await refusal("https://nx.example/", async () => {
      throw new Error("ENOTFOUND");
    });
    expect(failing.message).toMatch(/does not resolve/);
    expect(failing.retryable).toBe(true);
  });

  it("accepts public addresses and pins the first resolved one", async () => {
    const t = await vetTarget("https://hooks.example:8443/a?b=1", {
      ...strict,
      resolve: async () => ["93.184.216.34", "2606:4700::1111"],
    });
    expect(t).toMatchObject({ host: "hooks.example", address: "93.184.216.34", port: 8443 });
    const v6 = await vetTarget("https://[2606:4700::1111]/", strict);
    expect(v6).toMatchObject({ host: "2606:4700::1111", address: "2606:4700::1111", port: 443 });
  });

  it("allowPrivate lifts the address rule and allows http, nothing else", async () => {
    const lax = { allowPrivate: true };
    await expect(vetTarget("http://127.0.0.1:8080/", lax)).resolves.toMatchObject({
      address: "127.0.0.1",
      port: 8080,
    });
    await expect(vetTarget("https://[::1]/", lax)).resolves.toMatchObject({ address: "::1" });
    await expect(vetTarget("ftp://127.0.0.1/", lax)).rejects.toThrow(/scheme/);
  });

  it("isDeliverableAddress agrees with the table", () => {
    expect(isDeliverableAddress("93.184.216.34")).toBe(true);
    expect(isDeliverableAddress("2606:4700::1111")).toBe(true);
    expect(isDeliverableAddress("::ffff:93.184.216.34")).toBe(true);
    for (const a of ["::ffff:7f00:1", "::7f00:1", "168.63.129.16", "fd00:ec2::254", "x"]) {
      expect(isDeliverableAddress(a)).toBe(false);
    }
  });
});
