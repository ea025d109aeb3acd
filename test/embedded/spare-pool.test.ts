import { existsSync } from "node:fs";
import {
  chmod,
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { JobLauncher } from "../../functions/adapters/embedded/launcher.ts";
import { LocalProcessCompute } from "../../functions/adapters/embedded/local-process-compute.ts";
import { SparePool } from "../../functions/adapters/embedded/spare-pool.ts";
import type { JobEvent } from "../../functions/core/ports.ts";
import type { RequestRecord } from "../../functions/core/request.ts";
import { launchQueue, startingRecord } from "../helpers/records.ts";
import { waitFor } from "../runner/helpers.ts";

let dataDir: string;
let work: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "longrun-spares-"));
  work = join(dataDir, "work");
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

/** A work dir as a job leaves it: files in its folders, strays beside them, output moved away. */
async function usedWorkDir(path: string): Promise<void> {
  await mkdir(join(path, "checkpoint"), { recursive: true });
  await mkdir(join(path, "input"));
  await writeFile(join(path, "checkpoint", "state.bin"), "state");
  await writeFile(join(path, "input", "data.txt"), "data");
  await writeFile(join(path, "input.json"), '{"i":1}');
  await writeFile(join(path, "progress.json"), '{"current":1}');
  await mkdir(join(path, "stray", "deeper"), { recursive: true });
  await chmod(join(path, "checkpoint"), 0o500);
}

describe("the spare pool's work dirs", () => {
  it("come back as the bare skeleton, same folders, modes of fresh ones, renamed into the next place", async () => {
    // Arrange: a pool that makes none of its own, and a used work dir.
    const pool = new SparePool(work, { dirsLow: 0 });
    expect(await pool.ready()).toBe(true);
    const used = join(work, "req_a", "1");
    await usedWorkDir(used);
    const checkpointIno = (await stat(join(used, "checkpoint"))).ino;

    // Act
    await pool.recycleDir(used);
    const next = join(work, "req_b", "1");
    const taken = pool.takeDir(next);

    // Assert: the old place is free, the new one holds exactly three empty folders and an
    // empty input.json, the checkpoint folder is the same inode (reused, not made) with a
    // fresh folder's mode.
    expect(existsSync(used)).toBe(false);
    expect(taken).toBe(true);
    expect((await readdir(next)).sort()).toEqual(["checkpoint", "input", "input.json", "output"]);
    expect(await readFile(join(next, "input.json"), "utf8")).toBe("");
    for (const name of ["checkpoint", "input", "output"]) {
      expect(await readdir(join(next, name))).toEqual([]);
    }
    const fresh = (await stat(pool.folder)).mode & 0o7777;
    expect((await stat(join(next, "checkpoint"))).ino).toBe(checkpointIno);
    expect((await stat(join(next, "checkpoint"))).mode & 0o7777).toBe(fresh);
    expect(pool.takeDir(join(work, "req_c", "1"))).toBe(false);
    await pool.close();
    expect(existsSync(pool.folder)).toBe(false);
  });

  it("are removed instead when they hold a link, a file where a folder belongs or a hard-linked input.json; what they point at is untouched", async () => {
    // Arrange
    const pool = new SparePool(work, { dirsLow: 0 });
    await pool.ready();
    const outside = join(dataDir, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "keep.txt"), "keep");
    const linked = join(work, "req_link", "1");
    await mkdir(join(linked, "input"), { recursive: true });
    await symlink(outside, join(linked, "checkpoint"));
    const filed = join(work, "req_file", "1");
    await mkdir(join(filed, "checkpoint"), { recursive: true });
    await writeFile(join(filed, "input"), "not a folder");
    const hardLinked = join(work, "req_hard", "1");
    await mkdir(join(hardLinked, "checkpoint"), { recursive: true });
    await writeFile(join(outside, "other.json"), "other");
    await link(join(outside, "other.json"), join(hardLinked, "input.json"));

    // Act
    await pool.recycleDir(linked);
    await pool.recycleDir(filed);
    await pool.recycleDir(hardLinked);

    // Assert: nothing was pooled, both places are free, the link's target kept its file.
    expect(pool.size).toBe(0);
    expect(existsSync(linked)).toBe(false);
    expect(existsSync(filed)).toBe(false);
    expect(existsSync(hardLinked)).toBe(false);
    expect(await readFile(join(outside, "keep.txt"), "utf8")).toBe("keep");
    expect(await readFile(join(outside, "other.json"), "utf8")).toBe("other");
    await pool.close();
  });

  it("never replace a work dir that holds something: the caller makes its own", async () => {
    // Arrange: one skeleton ready, a leftover work dir with a file in the way.
    const pool = new SparePool(work, { dirsLow: 0 });
    await pool.ready();
    const used = join(work, "req_x", "1");
    await usedWorkDir(used);
    await pool.recycleDir(used);
    const leftover = join(work, "req_y", "1");
    await mkdir(leftover, { recursive: true });
    await writeFile(join(leftover, "left.txt"), "left");

    // Act
    const taken = pool.takeDir(leftover);

    // Assert
    expect(taken).toBe(false);
    expect(await readdir(leftover)).toEqual(["left.txt"]);
    await pool.close();
  });

  it("go into the existing work root of a later attempt, beside what is there", async () => {
    // Arrange: one skeleton ready; a work root holding the first attempt's launch record.
    const pool = new SparePool(work, { dirsLow: 0 });
    await pool.ready();
    await usedWorkDir(join(work, "req_w", "1"));
    await pool.recycleDir(join(work, "req_w", "1"));
    const root = join(work, "req_r");
    await mkdir(root, { recursive: true });
    await writeFile(join(root, ".pid-1"), "123 456\n");

    // Act
    const taken = pool.takeDir(join(root, "2"));

    // Assert
    expect(taken).toBe(true);
    expect((await readdir(root)).sort()).toEqual([".pid-1", "2"]);
    expect((await readdir(join(root, "2"))).sort()).toEqual([
      "checkpoint",
      "input",
      "input.json",
      "output",
    ]);
    expect(await readFile(join(root, ".pid-1"), "utf8")).toBe("123 456\n");
    await pool.close();
  });
});

/** A STARTING request record of attempt 1. */
function record(id: string): RequestRecord {
  return startingRecord({ id: `${id}${Date.now()}`, input: { hello: "world" } });
}

describe("starts with spares", () => {
  it("run in a recycled work dir holding nothing of the last job, with the launch record and the log linked from the launcher's spare files", async () => {
    // Arrange: a compute on the launcher and a pool; a job that lists its work dir, leaves a
    // stray file there and waits while a hold file exists.
    const hold = join(dataDir, "hold");
    const script = join(dataDir, "job.sh");
    await writeFile(
      script,
      `#!/bin/sh
echo "listing: $(ls -A | tr '\\n' ' ')input=$(cat "$LONGRUN_INPUT_FILE")"
echo stray > stray.txt
while [ -e "${hold}" ]; do sleep 0.02; done
`,
    );
    await chmod(script, 0o755);
    const queue = launchQueue({ command: ["/bin/sh", script] });
    const events: JobEvent[] = [];
    const launcher = new JobLauncher();
    const spares = new SparePool(work, { dirsLow: 0 });
    const compute = new LocalProcessCompute({
      dataDir,
      launcher,
      spares,
      onEvent: async (e) => {
        events.push(e);
      },
    });
    const layout = new FsLayout(dataDir);
    const exited = (id: string) => events.some((e) => e.requestId === id && e.type === "exited");
    const spareInodes = async () => {
      const names = (await readdir(spares.folder)).filter((n) => n.startsWith("f"));
      const inodes = await Promise.all(
        names.map((n) =>
          stat(join(spares.folder, n)).then(
            (s) => s.ino,
            () => -1,
          ),
        ),
      );
      return new Set(inodes);
    };
    try {
      await spares.ready();
      // Act 1: a first job, ended; its work dir goes back to the pool, the launcher makes spares.
      const a = record("req_sparea");
      await compute.start(a, queue);
      await waitFor(() => exited(a.id), 20_000, "the first job's end");
      await waitFor(() => spares.size === 1, 20_000, "its work dir back in the pool");
      await waitFor(async () => (await spareInodes()).size >= 2, 20_000, "the launcher's spares");
      const before = await spareInodes();

      // Act 2: a second job, held running.
      await writeFile(hold, "");
      const b = record("req_spareb");
      await compute.start(b, queue);
      const logB = layout.logFile(b.id);
      await waitFor(
        async () => (await readFile(logB, "utf8").catch(() => "")).includes("listing:"),
        20_000,
        "the second job's listing",
      );

      // Assert: the recycled work dir held only the skeleton and this request's input; its
      // record and its log are inodes the launcher made ahead.
      expect(spares.size).toBe(0);
      expect(await readFile(logB, "utf8")).toContain(
        'listing: checkpoint input input.json output input={"hello":"world"}',
      );
      const recordFile = join(layout.workRoot(b.id), ".pid-1");
      expect(before.has((await stat(recordFile)).ino)).toBe(true);
      expect(before.has((await stat(logB)).ino)).toBe(true);
      expect((await readFile(recordFile, "utf8")).split(" ")[0]).toMatch(/^[0-9]+$/);

      await rm(hold);
      await waitFor(() => exited(b.id), 20_000, "the second job's end");
      expect(events.filter((e) => e.type === "exited").map((e) => e.outcome)).toEqual([
        "succeeded",
        "succeeded",
      ]);
    } finally {
      await rm(hold, { force: true });
      await compute.shutdown(0);
      await launcher.close();
      await spares.close();
    }
  }, 60_000);
});
