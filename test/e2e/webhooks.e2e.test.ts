import { execFile } from "node:child_process";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BACKENDS, demoQueue, ROOT, TestServer } from "../helpers/server.ts";

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** Standard Webhooks verification written from the specification, independent of the server. */
function verify(secret: string, headers: IncomingHttpHeaders, body: string): boolean {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const id = String(headers["webhook-id"]);
  const ts = String(headers["webhook-timestamp"]);
  const mac = createHmac("sha256", key).update(`${id}.${ts}.${body}`).digest("base64");
  return String(headers["webhook-signature"])
    .split(" ")
    .some((sig) => {
      const [version, value] = sig.split(",");
      if (version !== "v1" || !value) return false;
      const a = Buffer.from(value);
      const b = Buffer.from(mac);
      return a.length === b.length && timingSafeEqual(a, b);
    });
}

/** A loopback receiver; `failNext` answers 500 that many times first. */
class Receiver {
  readonly received: Received[] = [];
  failNext = 0;
  attempts = 0;
  #server: Server | undefined;
  url = "";

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      let body = "";
      req.on("data", (c: Buffer) => {
        body += c.toString();
      });
      req.on("end", () => {
        this.attempts++;
        if (this.failNext > 0) {
          this.failNext--;
          res.writeHead(500).end();
          return;
        }
        this.received.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    this.#server = server;
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  }

  async until(n: number, timeoutMs = 30_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(this.received.length).toBeGreaterThanOrEqual(n);
    return this.received;
  }

  stop(): void {
    this.#server?.close();
  }
}

/** `longrun …args` against `server` as alice; its standard output. */
async function cli(server: TestServer, ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(ROOT, "bin/longrun.mjs"), ...args],
    { env: { ...process.env, LONGRUN_URL: server.url, LONGRUN_TOKEN: "t-alice" } },
  );
  return stdout.trim();
}

/**
 * SPEC §2 Webhooks, end to end on both backends (the aws one on the emulator, where the
 * server consumes the table's stream and the webhooks queue itself): signed, ordered,
 * retried, durable across a server kill, and verifiable with either key after a rotation.
 */
describe.each(BACKENDS)("webhooks (%s server, e2e)", (backend) => {
  const receiver = new Receiver();
  const server = new TestServer({
    backend,
    queues: { hooks: demoQueue({ maxRunning: 1 }) },
    // Loopback targets are private: lifted for this local test, as SPEC allows.
    env: { LONGRUN_WEBHOOK_ALLOW_PRIVATE: "1" },
  });
  let secret = "";

  beforeAll(async () => {
    await receiver.start();
    await server.start();
    const res = await server.fetch("/v1/webhook-secret");
    expect(res.status).toBe(200);
    secret = res.body.secret;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
  });
  afterAll(async () => {
    receiver.stop();
    await server.dispose();
  });

  it("sends started then completed, signed with the tenant's secret", async () => {
    const sub = await server.submit("hooks", {
      input: { steps: 2, sleepMs: 50 },
      webhook: { url: receiver.url, events: ["started", "completed"] },
    });
    expect(sub.status).toBe(202);
    const got = (await receiver.until(2)).filter((r) => JSON.parse(r.body).data.id === sub.body.id);
    expect(got.map((r) => JSON.parse(r.body).type)).toEqual([
      "request.started",
      "request.completed",
    ]);
    for (const r of got) {
      expect(verify(secret, r.headers, r.body)).toBe(true);
      expect(verify(`whsec_${Buffer.alloc(32, 1).toString("base64")}`, r.headers, r.body)).toBe(
        false,
      );
      expect(Math.abs(Number(r.headers["webhook-timestamp"]) - Date.now() / 1000)).toBeLessThan(60);
    }
    const completed = JSON.parse(got[1]?.body ?? "{}");
    expect(completed.data).toMatchObject({ id: sub.body.id, status: "SUCCEEDED" });
    expect(completed.data).not.toHaveProperty("tenant");
  });

  it("sends progress at most once a second per request, in order, before completed", async () => {
    receiver.received.length = 0;
    const sub = await server.submit("hooks", {
      input: { steps: 8, sleepMs: 250 },
      webhook: { url: receiver.url, events: ["progress", "completed"] },
    });
    await server.waitForStatus(sub.body.id, "SUCCEEDED");
    const mine = () =>
      receiver.received.map((r) => JSON.parse(r.body)).filter((p) => p.data.id === sub.body.id);
    const deadline = Date.now() + 30_000;
    while (!mine().some((p) => p.type === "request.completed") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const got = mine();
    const progress = got.filter((p) => p.type === "request.progress");
    expect(got.at(-1)?.type).toBe("request.completed");
    expect(progress.length).toBeGreaterThanOrEqual(1);
    // At most one per second: every progress webhook is of a second of its own.
    const seconds = progress.map((p) => Math.floor(Date.parse(p.timestamp) / 1000));
    expect(new Set(seconds).size).toBe(seconds.length);
    // Never backwards.
    const currents = progress.map((p) => p.data.progress.current as number);
    expect(currents).toEqual([...currents].sort((a, b) => a - b));
  });

  it("refuses a webhook target that is not https when private targets are not allowed", async () => {
    const strict = new TestServer({ backend, queues: { hooks: demoQueue() } });
    try {
      await strict.start();
      for (const url of [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/x",
      ]) {
        const res = await strict.submit("hooks", { input: 1, webhook: { url } });
        expect(res.status, url).toBe(400);
        expect(res.body.code).toBe("invalid_request");
      }
      const listed = await strict.fetch("/v1/queues/hooks");
      expect(listed.body.queued).toBe(0);
    } finally {
      await strict.dispose();
    }
  });

  it("signs with both keys for a day after a rotation, so a receiver verifies with either", async () => {
    const old = await cli(server, "webhook-secret");
    expect(old).toBe(secret);
    const rotated = await cli(server, "webhook-secret", "--rotate");
    expect(rotated).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(rotated).not.toBe(old);
    expect((await server.fetch("/v1/webhook-secret")).body.secret).toBe(rotated);
    // Another tenant's secret is its own and did not change.
    const bob = await server.fetch("/v1/webhook-secret", { token: "t-bob" });
    expect(bob.body.secret).not.toBe(rotated);

    receiver.received.length = 0;
    const sub = await server.submit("hooks", {
      input: { steps: 1, sleepMs: 10 },
      webhook: { url: receiver.url },
    });
    const got = await receiver.until(1);
    const delivered = got.find((r) => JSON.parse(r.body).data.id === sub.body.id);
    if (!delivered) throw new Error("the completed webhook did not arrive");
    expect(String(delivered.headers["webhook-signature"]).split(" ")).toHaveLength(2);
    // A receiver still on the old key and one already on the new key both accept it.
    expect(verify(old, delivered.headers, delivered.body)).toBe(true);
    expect(verify(rotated, delivered.headers, delivered.body)).toBe(true);
    expect(verify(String(bob.body.secret), delivered.headers, delivered.body)).toBe(false);
    secret = rotated;
  });

  it("retries a failed delivery with the same webhook-id, across a SIGKILL of the server", async () => {
    receiver.received.length = 0;
    receiver.failNext = 1;
    const sub = await server.submit("hooks", {
      input: { steps: 1, sleepMs: 10 },
      webhook: { url: receiver.url },
    });
    await server.waitForStatus(sub.body.id, "SUCCEEDED");
    // Wait for the first (failed) try, then kill the server before its retry.
    const deadline = Date.now() + 10_000;
    while (receiver.attempts === 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(receiver.received).toHaveLength(0);
    await server.kill("SIGKILL");
    await server.start();
    const got = await receiver.until(1, 90_000);
    const delivered = got.find((r) => JSON.parse(r.body).data.id === sub.body.id);
    expect(delivered).toBeDefined();
    expect(JSON.parse(delivered?.body ?? "{}").type).toBe("request.completed");
    expect(verify(secret, delivered?.headers ?? {}, delivered?.body ?? "")).toBe(true);
    // A kill inside a try holds the request's order lease (30 s on the aws server) until
    // it runs out: the wait above allows for it.
  }, 120_000);
});
