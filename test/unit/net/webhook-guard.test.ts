import { describe, expect, it } from "vitest";
import { createWebhookGuard } from "../../../functions/adapters/net/webhook-guard.ts";
import { InvalidRequestError } from "../../../functions/core/errors.ts";

/** The submit-time check of webhook targets (SPEC §2): https, public addresses only. */
describe("webhook target guard at submit", () => {
  const resolver = (table: Record<string, string[]>) => async (host: string) => {
    const found = table[host];
    if (!found) throw new Error(`ENOTFOUND ${host}`);
    return found;
  };
  const guard = createWebhookGuard({
    allowPrivate: false,
    resolve: resolver({
      "hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
      "internal.example.com": ["10.1.2.3"],
      "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
      "metadata.example.com": ["169.254.169.254"],
    }),
  });

  it("accepts an https URL whose name resolves only to public addresses", async () => {
    await expect(guard("https://hooks.example.com/longrun")).resolves.toBeUndefined();
    await expect(guard("https://93.184.216.34:8443/x")).resolves.toBeUndefined();
  });

  it.each([
    ["plain http", "http://hooks.example.com/longrun"],
    ["credentials in the URL", "https://user:pw@hooks.example.com/"],
    ["a name resolving to a private address", "https://internal.example.com/"],
    ["a name resolving to public and loopback addresses", "https://mixed.example.com/"],
    ["a name resolving to the metadata address", "https://metadata.example.com/"],
    ["a name that does not resolve", "https://nowhere.example.com/"],
    ["loopback", "https://127.0.0.1/"],
    ["a decimal IPv4 loopback", "https://2130706433/"],
    ["a hex IPv4 loopback", "https://0x7f.0.0.1/"],
    ["private 10/8", "https://10.0.0.1/"],
    ["private 172.16/12", "https://172.16.5.4/"],
    ["private 192.168/16", "https://192.168.1.1/"],
    ["cloud metadata", "https://169.254.169.254/latest/meta-data/"],
    ["CGNAT", "https://100.64.0.1/"],
    ["unspecified", "https://0.0.0.0/"],
    ["multicast", "https://224.0.0.1/"],
    ["IPv6 loopback", "https://[::1]/"],
    ["IPv6 link-local", "https://[fe80::1]/"],
    ["IPv6 unique local", "https://[fd00::1]/"],
    ["AWS IPv6 metadata", "https://[fd00:ec2::254]/"],
    ["IPv4-mapped loopback", "https://[::ffff:127.0.0.1]/"],
    ["IPv4-mapped metadata", "https://[::ffff:169.254.169.254]/"],
    ["IPv4-compatible loopback", "https://[::127.0.0.1]/"],
    ["Azure's wire server", "https://168.63.129.16/"],
    ["not a URL", "hooks.example.com"],
  ])("refuses %s", async (_name, url) => {
    await expect(guard(url)).rejects.toBeInstanceOf(InvalidRequestError);
  });

  it("lets local development use http and private targets when allowed", async () => {
    const dev = createWebhookGuard({ allowPrivate: true, resolve: resolver({}) });
    await expect(dev("http://127.0.0.1:9000/hook")).resolves.toBeUndefined();
    await expect(dev("ftp://127.0.0.1/hook")).rejects.toBeInstanceOf(InvalidRequestError);
  });
});
