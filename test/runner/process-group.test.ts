import { type ChildProcess, spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import {
  decodeJobRef,
  encodeJobRef,
  processGroupAlive,
  processStartTime,
  reapProcessGroup,
} from "../../jobs/runner/index.ts";
import { alive, waitFor } from "./helpers.ts";

const spawned: ChildProcess[] = [];

/** A detached shell (its own process group) running two sleeps; prints the inner pid. */
async function detachedGroup(): Promise<{ leader: number; member: number }> {
  const child = spawn("sh", ["-c", "sleep 30 & echo $!; wait"], {
    detached: true,
    stdio: ["ignore", "pipe", "ignore"],
  });
  spawned.push(child);
  const member = await new Promise<number>((resolve) => {
    child.stdout?.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
  });
  return { leader: child.pid!, member };
}

afterEach(() => {
  for (const child of spawned.splice(0)) {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

describe("job references", () => {
  it("round-trips pid and start time, and refuses anything that is not a local job", () => {
    expect(decodeJobRef(encodeJobRef({ pid: 1234, startTime: "98765" }))).toEqual({
      pid: 1234,
      startTime: "98765",
    });
    expect(decodeJobRef("local:1234")).toEqual({ pid: 1234, startTime: null });
    expect(encodeJobRef({ pid: 1234, startTime: null })).toBe("local:1234");
    for (const bad of [
      "",
      "local:",
      "local:1",
      "local:0:5",
      "local:-5:1",
      "local:12x",
      "batch-job-1",
    ]) {
      expect(decodeJobRef(bad)).toBeNull();
    }
  });
});

describe("reapProcessGroup", () => {
  it("stops every process of a detached group left behind", async () => {
    const { leader, member } = await detachedGroup();
    const ref = encodeJobRef({ pid: leader, startTime: await processStartTime(leader) });

    const result = await reapProcessGroup(ref, { graceMs: 2000 });

    expect(result).toBe("reaped");
    await waitFor(
      async () => !(await alive(member)) && !(await alive(leader)),
      3000,
      "group death",
    );
    expect(await processGroupAlive(leader)).toBe(false);
  });

  it("leaves alone a process whose start time differs (a reused pid)", async () => {
    const { leader, member } = await detachedGroup();
    const start = await processStartTime(leader);
    const ref = encodeJobRef({ pid: leader, startTime: String(Number(start) + 1) });

    const result = await reapProcessGroup(ref, { graceMs: 200 });

    expect(result).toBe("pid-reused");
    expect(await alive(leader)).toBe(true);
    expect(await alive(member)).toBe(true);
  });

  it("escalates to SIGKILL when the group ignores SIGTERM", async () => {
    const child = spawn("sh", ["-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], {
      detached: true,
      stdio: ["ignore", "pipe", "ignore"],
    });
    spawned.push(child);
    await new Promise((resolve) => child.stdout?.once("data", resolve));
    const ref = encodeJobRef({ pid: child.pid!, startTime: await processStartTime(child.pid!) });

    const t0 = Date.now();
    const result = await reapProcessGroup(ref, { graceMs: 300 });

    expect(result).toBe("reaped");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(await processGroupAlive(child.pid!)).toBe(false);
  });

  it("says not-running for a group that is gone and not-local for other references", async () => {
    const child = spawn("true", [], { detached: true, stdio: "ignore" });
    await new Promise((resolve) => child.once("exit", resolve));

    expect(await reapProcessGroup(`local:${child.pid}`)).toBe("not-running");
    expect(await reapProcessGroup("arn:aws:batch:job/1")).toBe("not-local");
  });
});
