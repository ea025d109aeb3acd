import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launcherPids } from "../../chaos/procs.ts";
import { FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { GpuPool } from "../../functions/adapters/embedded/gpu-pool.ts";
import { JobLauncher } from "../../functions/adapters/embedded/launcher.ts";
import { LocalProcessCompute } from "../../functions/adapters/embedded/local-process-compute.ts";
import { SqliteRequestStore } from "../../functions/adapters/embedded/sqlite-store.ts";
import type { QueueConfig } from "../../functions/config/schema.ts";
import type { JobEvent } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { decodeJobRef } from "../../jobs/runner/index.ts";
import { launchQueue, startingRecord } from "../helpers/records.ts";
import { TestServer } from "../helpers/server.ts";
import { waitFor } from "../runner/helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "longrun-launcher-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A STARTING request record of attempt 1. */
function record(id: string): RequestRecord {
  return startingRecord({ id: `${id}${Date.now()}` });
}

/** Writes an executable /bin/sh job script and returns its command. */
async function shJob(name: string, body: string): Promise<string[]> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}`);
  await chmod(path, 0o755);
  return ["/bin/sh", path];
}

describe("jobs started by the launcher", () => {
  it("get their environment, cwd, devices and own process group; exits and signals are reported", async () => {
    // Arrange: a compute on the launcher with a two-GPU pool; a job that describes itself
    // and exits 3, and one that ignores SIGTERM.
    const dataDir = await mkdtemp(join(tmpdir(), "longrun-launcher-lpc-"));
    const events: JobEvent[] = [];
    const launcher = new JobLauncher();
    const compute = new LocalProcessCompute({
      dataDir,
      launcher,
      gpus: new GpuPool(["0", "1"], null),
      onEvent: async (e) => {
        events.push(e);
      },
    });
    const describeSelf = await shJob(
      "describe.sh",
      `echo "cwd=$(pwd) cuda=$CUDA_VISIBLE_DEVICES queue=$FROM_QUEUE pgid=$(ps -o pgid= -p $$ | tr -d ' ') pid=$$"
echo "the last words" >&2
exit 3
`,
    );
    const stubborn = await shJob(
      "stubborn.sh",
      `trap 'echo got TERM' TERM
echo started
while :; do sleep 0.05; done
`,
    );
    const queue = (command: string[], gpus: number): QueueConfig =>
      launchQueue({
        command,
        maxRunning: 2,
        resources: { gpus, vcpus: 1, memoryMiB: 512 },
        env: { FROM_QUEUE: "yes" },
      });
    const exitedOf = (id: string) =>
      events.find((e) => e.requestId === id && e.type === "exited") as
        | Extract<JobEvent, { type: "exited" }>
        | undefined;
    try {
      // Act 1: the describing job.
      const a = record("req_launchera");
      const { jobRef } = await compute.start(a, queue(describeSelf, 2));
      await waitFor(() => exitedOf(a.id) !== undefined, 20_000, "the job's exit");

      // Assert 1
      const workDir = new FsLayout(dataDir).workDir(a.id, 1);
      const pid = decodeJobRef(jobRef)?.pid;
      const log = await readFile(new FsLayout(dataDir).logFile(a.id), "utf8");
      expect(log).toContain(`cwd=${workDir} cuda=0,1 queue=yes pgid=${pid} pid=${pid}`);
      expect(exitedOf(a.id)).toMatchObject({ outcome: "failed" });
      expect(exitedOf(a.id)?.message).toBe("job exited with code 3: the last words");

      // Act 2: the job that ignores SIGTERM, cancelled.
      const b = record("req_launcherb");
      await compute.start(b, queue(stubborn, 0));
      const logB = new FsLayout(dataDir).logFile(b.id);
      await waitFor(
        async () => (await readFile(logB, "utf8").catch(() => "")).includes("started"),
        20_000,
        "the stubborn job to start",
      );
      await compute.stop(b, "cancel");
      await waitFor(() => exitedOf(b.id) !== undefined, 20_000, "the stubborn job's end");

      // Assert 2: SIGTERM first (the job saw it), SIGKILL after the grace.
      expect(await readFile(logB, "utf8")).toContain("got TERM");
      expect(exitedOf(b.id)?.message).toBe("stopped (cancel); job killed by signal SIGKILL");
    } finally {
      await compute.shutdown(0);
      await launcher.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("job output after a SIGKILL of the server", () => {
  it("still reaches the request's log: the job writes into the log file itself", async () => {
    // Arrange: a job that prints a line every 20 ms, and one more line once it sees `go`
    // (which is only created after the kill), then exits.
    const go = join(dir, "go");
    const done = join(dir, "done");
    const command = await shJob(
      "writer.sh",
      `i=0
while [ ! -e "${go}" ]; do echo "tick $i"; i=$((i+1)); sleep 0.02; done
echo "written after the server was killed"
echo "to stderr after the kill" >&2
touch "${done}"
`,
    );
    const server = new TestServer({
      queues: { w: { command, maxRunning: 1, timeoutSeconds: 60, cancelGraceSeconds: 1 } },
    });
    try {
      await server.start();
      const res = await server.submit("w", { input: {} });
      expect(res.status).toBe(202);
      const id = res.body.id as string;
      const logFile = join(server.dataDir, "logs", `${id}.log`);
      await waitFor(
        async () => (await readFile(logFile, "utf8").catch(() => "")).includes("tick 3"),
        20_000,
        "the job's first lines",
      );

      // Act: SIGKILL the server while the job writes, then let the job write on.
      await server.kill("SIGKILL");
      await writeFile(go, "");
      await waitFor(() => existsSync(done), 20_000, "the job to write after the kill");

      // Assert: what it wrote after the kill is in its log, after what it wrote before.
      const log = await readFile(logFile, "utf8");
      expect(log).toContain("--- attempt 1 ---");
      expect(log).toContain("written after the server was killed");
      expect(log).toContain("to stderr after the kill");
      expect(log.indexOf("tick 3")).toBeLessThan(log.indexOf("written after the server"));
    } finally {
      await server.dispose();
      await rm(go, { force: true });
    }
  }, 60_000);
});

describe("SIGKILLs of the job launcher under load", () => {
  it("start a new launcher; every request finishes once, no job runs twice at once, every extra run is a recorded platform retry", async () => {
    // Arrange: 40 requests through maxRunning 4, each job appends `start` and `end` lines with
    // its request, attempt and pid to one file.
    const runs = join(dir, "runs.txt");
    const command = await shJob(
      "run.sh",
      `echo "$LONGRUN_REQUEST_ID $LONGRUN_ATTEMPT start $$" >> "${runs}"
sleep 0.15
echo "$LONGRUN_REQUEST_ID $LONGRUN_ATTEMPT end $$" >> "${runs}"
`,
    );
    const n = 40;
    const server = new TestServer({
      queues: {
        q: {
          command,
          maxRunning: 4,
          maxQueued: 100,
          maxAttempts: 1,
          timeoutSeconds: 60,
          cancelGraceSeconds: 1,
        },
      },
    });
    try {
      await server.start();
      const serverPid = server.pid ?? 0;
      const ids: string[] = [];
      for (let i = 0; i < n; i++) {
        const res = await server.submit("q", { input: { i } });
        expect(res.status).toBe(202);
        ids.push(res.body.id as string);
      }

      // Act: SIGKILL the launcher at random points while the queue drains (at most 12
      // times: each kill loses its running jobs' exit status, and a request is retried for
      // that at most 10 times).
      let kills = 0;
      const isDone = async () => {
        const c = (await server.fetch("/v1/queues/q")).body as { queued: number; running: number };
        return c.queued === 0 && c.running === 0;
      };
      while (!(await isDone())) {
        await sleep(100 + Math.floor(Math.random() * 400));
        if (kills >= 12) continue;
        for (const pid of launcherPids(serverPid)) {
          process.kill(pid, "SIGKILL");
          kills++;
        }
      }
      await server.stop();

      // Assert
      expect(kills).toBeGreaterThan(0);
      expect(server.output).toContain("starting a new one");
      const store = new SqliteRequestStore(join(server.dataDir, "longrun.db"));
      let records: RequestRecord[];
      try {
        records = (await store.list({ tenant: "alice", queue: "q", limit: n })).items;
      } finally {
        store.close();
      }
      expect(records).toHaveLength(n);
      const lines = (await readFile(runs, "utf8")).trim().split("\n");
      for (const r of records) {
        expect(r.status, `${r.id}: ${JSON.stringify(r.error)}`).toBe("SUCCEEDED");
        const mine = lines.map((l) => l.split(" ")).filter(([id]) => id === r.id);
        const starts = mine.filter(([, , what]) => what === "start");
        const story = `${r.id} runs: ${mine.map((l) => l.join(" ")).join(", ")}\n${server.output}`;
        // No attempt is launched twice (a resend after a launcher died must not run what the
        // dead one had forked), and the attempt that succeeded ran once.
        const perAttempt = new Map<string, number>();
        for (const [, attempt] of starts) {
          perAttempt.set(attempt ?? "", (perAttempt.get(attempt ?? "") ?? 0) + 1);
        }
        for (const [attempt, count] of perAttempt) {
          expect(count, `attempt ${attempt} ran ${count} times; ${story}`).toBe(1);
        }
        expect(perAttempt.get(String(r.attempt)), story).toBe(1);
        // Every run but the first is a platform retry the store counts (a job whose exit
        // status died with its launcher, or a launch lost with it); none is silent.
        expect(starts.length, story).toBeLessThanOrEqual(1 + r.platformRetries);
        // Runs one after another: each started run ended before the next began.
        let open = 0;
        for (const [, , what] of mine) {
          open += what === "start" ? 1 : -1;
          expect(open, `${r.id} ran two jobs at once`).toBeLessThanOrEqual(1);
        }
        expect(open).toBe(0);
      }
    } finally {
      await server.dispose();
    }
  }, 180_000);
});
