import { join } from "node:path";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { afterAll, describe, expect, inject, it } from "vitest";
import { CHAOS_JOB } from "../../chaos/engine.ts";
import { JobProcessScanner, killProcesses } from "../../chaos/procs.ts";
import { resourceNames } from "../../functions/adapters/aws/definitions.ts";
import { DynamoRequestStore } from "../../functions/adapters/aws/dynamo-request-store.ts";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import { RequestStatus } from "../../functions/core/request.ts";
import { BACKENDS, type Backend, TestServer } from "../helpers/server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Found by the chaos run (chaos/engine.ts, "two jobs at once"), reduced: SPEC §5 says a
 * restarted server stops the job processes left over from the dead one before it runs their
 * requests again. A job the dead server had already spawned, but whose handle (`jobRef`) it
 * had not yet stored when it was SIGKILLed, used to survive: the restart saw a STARTING
 * request without a jobRef, took it for never spawned, and started the next attempt while the
 * first still ran (two jobs of one request, maxRunning + 1 live jobs on a full queue). The
 * restart now finds such jobs in /proc by their LONGRUN_REQUEST_ID.
 *
 * The job is chaos/job.mjs (the demo job, surviving the broken stdout pipe of its dead
 * server, as real jobs do) with one 30 s step, so it does nothing the restart could trip on.
 */
describe.each(BACKENDS)("a job spawned just before a SIGKILL (%s backend)", (backend: Backend) => {
  const marker = `chaos-repro-${backend}-${Date.now().toString(36)}`;
  const scanner = new JobProcessScanner(`LONGRUN_CHAOS_RUN=${marker}`);
  const server = new TestServer({
    backend,
    ...(backend === "aws" ? { awsEndpoint: inject("awsEndpoint") } : {}),
    queues: {
      q: {
        command: [process.execPath, CHAOS_JOB],
        maxRunning: 1,
        timeoutSeconds: 120,
        maxAttempts: 3,
        cancelGraceSeconds: 1,
        env: { LONGRUN_CHAOS_RUN: marker },
      },
    },
  });
  afterAll(async () => {
    await server.dispose();
    killProcesses(scanner.scan());
  });

  /**
   * Puts the request back in the state a SIGKILL between spawn and the handle's write leaves
   * (STARTING, same attempt, no jobRef), through the store while the server is down. Racing
   * a kill into that window is not reliable: the window is now well under a millisecond.
   */
  async function forgetJobRef(id: string, attempt: number): Promise<void> {
    const cmd = {
      id,
      from: [RequestStatus.RUNNING, RequestStatus.STARTING],
      to: RequestStatus.STARTING,
      attempt,
      set: { jobRef: null },
    };
    if (backend === "embedded") {
      const store = new SqliteRequestStore(join(server.dataDir, "longrun.db"));
      try {
        expect(await store.transition(cmd)).toMatchObject({ jobRef: null, status: "STARTING" });
      } finally {
        store.close();
      }
      return;
    }
    const client = new DynamoDBClient({
      endpoint: inject("awsEndpoint"),
      region: "us-east-1",
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
    });
    try {
      const store = new DynamoRequestStore({
        client,
        tableName: resourceNames(server.awsPrefix).tableName,
        queues: () => ["q"],
      });
      expect(await store.transition(cmd)).toMatchObject({ jobRef: null, status: "STARTING" });
    } finally {
      client.destroy();
    }
  }

  it("is stopped by the restarted server before the request runs again", async () => {
    // Prepare: a job running, its server SIGKILLed, its handle gone from the store.
    await server.start();
    const submitted = await server.submit("q", { input: { steps: 1, sleepMs: 30_000 } });
    expect(submitted.status).toBe(202);
    const id = submitted.body.id as string;
    await server.waitForStatus(id, "RUNNING");
    const orphan = scanner.scan().find((p) => p.requestId === id);
    expect(orphan).toBeDefined();
    await server.kill("SIGKILL");
    await forgetJobRef(id, Number(orphan?.attempt));

    // Act
    await server.start();
    // The ready line comes after recovery: the left-over job must be gone by now, and the
    // request must not run two jobs at once.
    await sleep(300);

    // Assess
    const live = scanner.scan().filter((p) => p.requestId === id);
    const jobs = live.map((p) => `pid ${p.pid} attempt ${p.attempt}`);
    expect(jobs, "the dead server's job still runs").not.toContain(
      `pid ${orphan?.pid} attempt ${orphan?.attempt}`,
    );
    expect(jobs.length, `jobs of ${id}: ${jobs.join(", ")}`).toBeLessThanOrEqual(1);
  }, 180_000);
});
