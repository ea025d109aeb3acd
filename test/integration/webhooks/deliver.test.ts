/**
 * One delivery attempt against real loopback receivers: http (allowPrivate) and https with a
 * certificate made by openssl, timeouts, no redirects, refusals that never connect, and DNS
 * rebinding defeated by connecting to the vetted address.
 */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { createDeliverer, USER_AGENT } from "../../../functions/webhooks/deliver.ts";
import { makeCertificate, type Receiver, startReceiver, type Tls } from "./receiver.ts";

const body = JSON.stringify({ type: "request.completed", data: { id: "req_1", note: "é" } });
const sigHeaders = {
  "webhook-id": "msg_1",
  "webhook-timestamp": "1750000000",
  "webhook-signature": "v1,abc",
};

let open: Receiver[] = [];
async function receiver(options: Parameters<typeof startReceiver>[0] = {}): Promise<Receiver> {
  const r = await startReceiver(options);
  open.push(r);
  return r;
}
afterEach(async () => {
  await Promise.all(open.map((r) => r.close()));
  open = [];
});

describe("deliver over http (allowPrivate)", () => {
  const deliver = createDeliverer({ allowPrivate: true, timeoutMs: 2000 });

  it("POSTs the exact body with the signature, JSON and user-agent headers", async () => {
    const r = await receiver();
    const result = await deliver({ url: `${r.url}/hook?x=1`, body, headers: sigHeaders });
    expect(result).toEqual({ ok: true, status: 200, retryable: false });
    expect(r.received).toHaveLength(1);
    const got = r.received[0]!;
    expect(got.method).toBe("POST");
    expect(got.url).toBe("/hook?x=1");
    expect(got.body).toBe(body);
    expect(got.headers).toMatchObject({
      "content-type": "application/json",
      "user-agent": USER_AGENT,
      host: `127.0.0.1:${r.port}`,
      "content-length": String(Buffer.byteLength(body)),
      ...sigHeaders,
    });
  });

  it("counts every 2xx as delivered and every other status as a retryable failure", async () => {
    const statuses = [204, 500, 404, 400, 429, 503];
    const r = await receiver({ answer: (n) => statuses[n] ?? 200 });
    const results = [];
    for (const _ of statuses) results.push(await deliver({ url: r.url, body, headers: {} }));
    expect(results.map((x) => [x.ok, x.status, x.retryable])).toEqual([
      [true, 204, false],
      [false, 500, true],
      [false, 404, true],
      [false, 400, true],
      [false, 429, true],
      [false, 503, true],
    ]);
  });

  it("does not follow a redirect: a 3xx is a failure and its target gets nothing", async () => {
    const target = await receiver();
    const r = await receiver({
      answer: () => ({ status: 307, headers: { location: `${target.url}/stolen` } }),
    });
    const result = await deliver({ url: r.url, body, headers: {} });
    expect(result).toMatchObject({ ok: false, status: 307, retryable: true });
    expect(result.error).toMatch(/redirects are not followed/);
    expect(target.received).toHaveLength(0);
  });

  it("gives up on a receiver that does not answer in time (retryable)", async () => {
    const r = await receiver({ answer: () => "hang" });
    const quick = createDeliverer({ allowPrivate: true, timeoutMs: 200 });
    const started = Date.now();
    const result = await quick({ url: r.url, body, headers: {} });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(result).toMatchObject({ ok: false, retryable: true });
    expect(result.error).toMatch(/no answer within 200 ms/);
    expect(r.received).toHaveLength(1);
  });

  it("bounds the name lookup by the same timeout, so a whole try is bounded", async () => {
    const d = createDeliverer({
      allowPrivate: true,
      resolve: () => new Promise<string[]>(() => {}),
      timeoutMs: 200,
    });
    const result = await d({ url: "http://hooks.test/", body, headers: {} });
    expect(result).toMatchObject({ ok: false, retryable: true });
    expect(result.error).toMatch(/lookup took over 200 ms/);
  });

  it("reports a refused connection as a retryable failure", async () => {
    const r = await receiver();
    const url = r.url;
    await r.close();
    open = [];
    const result = await deliver({ url, body, headers: {} });
    expect(result).toMatchObject({ ok: false, retryable: true });
    expect(result.error).toMatch(/ECONNREFUSED/);
  });

  it("connects to the address vetted at check time, not to a later DNS answer (rebinding)", async () => {
    const vetted = await receiver({ host: "127.0.0.1" });
    const internal = await receiver({ host: "127.0.0.2", port: vetted.port });
    const answers = [["127.0.0.1"]];
    const asked: string[] = [];
    const resolve = async (host: string) => {
      asked.push(host);
      // first answer: the vetted address; every later one: the "internal" address
      return answers.shift() ?? ["127.0.0.2"];
    };
    const d = createDeliverer({ allowPrivate: true, resolve, timeoutMs: 2000 });
    const result = await d({ url: `http://rebind.test:${vetted.port}/h`, body, headers: {} });
    expect(result.ok).toBe(true);
    expect(asked).toEqual(["rebind.test"]);
    expect(vetted.received).toHaveLength(1);
    expect(vetted.received[0]!.localAddress).toBe("127.0.0.1");
    expect(vetted.received[0]!.headers.host).toBe(`rebind.test:${vetted.port}`);
    expect(internal.received).toHaveLength(0);
  });
});

describe("refusals never connect", () => {
  it("refuses loopback and http when private targets are not allowed", async () => {
    const r = await receiver();
    const strict = createDeliverer({ allowPrivate: false, timeoutMs: 1000 });
    const forms = [
      `https://127.0.0.1:${r.port}/`,
      `https://2130706433:${r.port}/`,
      `https://0x7f.0.0.1:${r.port}/`,
      `https://[::ffff:127.0.0.1]:${r.port}/`,
      `http://127.0.0.1:${r.port}/`,
    ];
    for (const url of forms) {
      const result = await strict({ url, body, headers: {} });
      expect(result, url).toMatchObject({ ok: false, retryable: false });
    }
    const named = createDeliverer({
      allowPrivate: false,
      resolve: async () => ["127.0.0.1"],
    });
    const viaName = await named({ url: `https://hooks.test:${r.port}/`, body, headers: {} });
    expect(viaName).toMatchObject({ ok: false, retryable: false });
    expect(viaName.error).toMatch(/non-public address 127\.0\.0\.1/);
    expect(r.received).toHaveLength(0);
  });
});

describe("deliver over https", () => {
  let tls: Tls;
  beforeAll(() => {
    // Fails the suite loudly without openssl instead of skipping the TLS tests.
    tls = makeCertificate();
  });

  it("is refused for a private address even over https, without connecting", async () => {
    const r = await receiver({ tls });
    const strict = createDeliverer({ allowPrivate: false, resolve: async () => ["10.0.0.1"] });
    const result = await strict({ url: `https://hooks.test:${r.port}/`, body, headers: {} });
    expect(result).toMatchObject({ ok: false, retryable: false });
    expect(r.received).toHaveLength(0);
  });

  it("delivers over TLS with SNI and certificate check on the host name", async () => {
    const r = await receiver({ tls });
    // 127.0.0.1 stands in for a public address: only it passes the address rule here.
    const d = createDeliverer({
      allowPrivate: false,
      resolve: async () => ["127.0.0.1"],
      isAllowedAddress: (a) => a === "127.0.0.1",
      ca: tls.cert,
      timeoutMs: 2000,
    });
    const result = await d({ url: `https://hooks.test:${r.port}/tls`, body, headers: sigHeaders });
    expect(result).toEqual({ ok: true, status: 200, retryable: false });
    expect(r.received[0]).toMatchObject({ body, url: "/tls" });
    expect(r.received[0]!.headers.host).toBe(`hooks.test:${r.port}`);
    // a certificate that does not name the host fails (no fallback to the address)
    const wrongName = await createDeliverer({
      allowPrivate: false,
      resolve: async () => ["127.0.0.1"],
      isAllowedAddress: (a) => a === "127.0.0.1",
      ca: tls.cert,
    })({ url: `https://other.test:${r.port}/`, body, headers: {} });
    expect(wrongName).toMatchObject({ ok: false, retryable: true });
    expect(wrongName.error).toMatch(/other\.test/);
    // an untrusted certificate fails
    const untrusted = await createDeliverer({ allowPrivate: true, timeoutMs: 2000 })({
      url: `https://127.0.0.1:${r.port}/`,
      body,
      headers: {},
    });
    expect(untrusted).toMatchObject({ ok: false, retryable: true });
    expect(r.received).toHaveLength(1);
  });

  it("pins the vetted address over https when DNS rebinds to a private one", async () => {
    const vetted = await receiver({ tls, host: "127.0.0.1" });
    const internal = await receiver({ tls, host: "127.0.0.2", port: vetted.port });
    let calls = 0;
    const resolve = async () => (++calls === 1 ? ["127.0.0.1"] : ["127.0.0.2"]);
    const d = createDeliverer({
      allowPrivate: false,
      resolve,
      // 127.0.0.1 plays the public address; 127.0.0.2 the private one a rebinding points to
      isAllowedAddress: (a) => a === "127.0.0.1",
      ca: tls.cert,
      timeoutMs: 2000,
    });
    const url = `https://hooks.test:${vetted.port}/`;
    expect(await d({ url, body, headers: {} })).toMatchObject({ ok: true, status: 200 });
    expect(calls).toBe(1);
    expect(vetted.received.map((x) => x.localAddress)).toEqual(["127.0.0.1"]);
    expect(internal.received).toHaveLength(0);
    // the next attempt checks again, sees the private answer and refuses without connecting
    expect(await d({ url, body, headers: {} })).toMatchObject({ ok: false, retryable: false });
    expect(calls).toBe(2);
    expect(internal.received).toHaveLength(0);
  });
});
