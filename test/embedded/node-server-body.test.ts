/**
 * The embedded server's listener turns Node's whole-request timeout off (an upload's PUT
 * takes as long as its bytes take), so API bodies get a deadline of their own: one trickled
 * slower is cut off instead of holding a connection forever.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect } from "node:net";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createRequestListener } from "../../functions/local/node-server.ts";

let server: Server;
let port: number;
const seen: string[] = [];

beforeEach(async () => {
  seen.length = 0;
  server = createServer(
    createRequestListener({
      handle: async (req) => {
        seen.push(String(req.body ?? ""));
        return { status: 200, headers: { "content-type": "application/json" }, body: "{}" };
      },
      maxBodyBytes: 1024,
      bodyTimeoutMs: 300,
      log: () => {},
    }),
  );
  server.requestTimeout = 0;
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  port = (server.address() as AddressInfo).port;
});
afterEach(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

/** Sends raw bytes and resolves with what came back once the server closed the socket. */
function raw(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(text));
    let got = "";
    socket.on("data", (c: Buffer) => {
      got += c.toString();
    });
    socket.on("close", () => resolve(got));
    socket.on("error", reject);
  });
}

it("cuts off an API body that does not arrive in time, answering nothing", async () => {
  const got = await raw("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
  expect(got).toBe("");
  expect(seen).toEqual([]);
});

it("serves a body that arrives in time", async () => {
  const got = await raw(
    "POST /v1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
  );
  expect(got).toContain("200 OK");
  expect(seen).toEqual(["ok"]);
});
