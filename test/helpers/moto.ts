/**
 * vitest globalSetup: one AWS emulator endpoint for the whole run. With
 * LONGRUN_TEST_ENDPOINT set (LocalStack on :4566 where Docker exists) the tests use it as it
 * is; otherwise a moto server is started on a free loopback port and stopped at the end.
 * Test files share the endpoint and isolate themselves by unique resource names, so they can
 * run in parallel (a reset between files would wipe a neighbour's state).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    awsEndpoint: string;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

async function waitUntilUp(endpoint: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}`);
    try {
      const res = await fetch(`${endpoint}/moto-api/config`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ batch: { use_docker: false }, lambda: { use_docker: false } }),
      });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error("moto_server did not come up within 30 s");
}

let child: ChildProcess | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.LONGRUN_TEST_ENDPOINT;
  if (given) {
    project.provide("awsEndpoint", given.replace(/\/$/, ""));
    return async () => {};
  }
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  child = spawn(
    "python3",
    [join(import.meta.dirname, "moto_server.py"), "127.0.0.1", String(port)],
    {
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  try {
    await waitUntilUp(endpoint, child);
  } catch (error) {
    child.kill("SIGKILL");
    throw new Error(`${(error as Error).message}\n${stderr}`);
  }
  project.provide("awsEndpoint", endpoint);
  return async () => {
    child?.kill("SIGTERM");
  };
}
