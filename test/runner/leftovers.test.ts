import { spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { decodeJobRef, findJobsOfRequest } from "../../jobs/runner/index.ts";

const children: number[] = [];

afterEach(() => {
  for (const pid of children.splice(0)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** A sleeping job the runner's way: its own process group, the request id in its env. */
function sleeper(requestId: string): number {
  const child = spawn("sh", ["-c", "sleep 30 & wait"], {
    detached: true,
    stdio: "ignore",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LONGRUN_REQUEST_ID: requestId },
  });
  child.unref();
  if (child.pid === undefined) throw new Error("spawn failed");
  children.push(child.pid);
  return child.pid;
}

describe("findJobsOfRequest", () => {
  it("finds the group leader whose environment names the request, and no other", async () => {
    // Prepare
    const id = `req_LEFTOVER${Date.now()}`;
    const mine = sleeper(id);
    sleeper(`${id}X`);
    await new Promise((r) => setTimeout(r, 100));

    // Act
    const refs = await findJobsOfRequest(id);

    // Assess: the `sleep` child shares the variable but not the leadership.
    expect(refs.map((r) => decodeJobRef(r)?.pid)).toEqual([mine]);
    expect(decodeJobRef(refs[0] as string)?.startTime).toMatch(/^[0-9]+$/);
  });

  it("finds nothing for a request without live jobs", async () => {
    // Act
    const refs = await findJobsOfRequest("req_NOBODY");

    // Assess
    expect(refs).toEqual([]);
  });
});
