import type * as fsPromises from "node:fs/promises";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FsAttemptStorage, FsLayout } from "../../functions/adapters/embedded/fs-storage.ts";
import { removeDir, tempDir } from "../runner/helpers.ts";

/** Renames from a folder `crossDevice` names fail as they would across filesystems. */
const injected = vi.hoisted(() => ({
  crossDevice: null as string | null,
  renames: [] as string[][],
}));

vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof fsPromises>();
  return {
    ...actual,
    rename: async (from: string, to: string) => {
      injected.renames.push([String(from), String(to)]);
      if (injected.crossDevice !== null && String(from).startsWith(injected.crossDevice)) {
        throw Object.assign(new Error(`EXDEV: cross-device link not permitted, rename '${from}'`), {
          code: "EXDEV",
        });
      }
      return actual.rename(from, to);
    },
  };
});

let dataDir: string;
let layout: FsLayout;

beforeEach(async () => {
  dataDir = await tempDir("exdev");
  layout = new FsLayout(dataDir);
  injected.renames = [];
});
afterEach(async () => {
  injected.crossDevice = null;
  await removeDir(dataDir);
});

async function outputFolder(): Promise<string> {
  const dir = join(dataDir, "work", "req_x", "1", "output");
  await mkdir(join(dir, "sub"), { recursive: true });
  await writeFile(join(dir, "result.json"), '{"ok":true}');
  await writeFile(join(dir, "sub", "model.bin"), "weights");
  return dir;
}

describe("FsAttemptStorage.saveOutputs across filesystems", () => {
  it("moves the folder with one rename on the same filesystem", async () => {
    const dir = await outputFolder();
    await mkdir(join(dataDir, "outputs"));

    await new FsAttemptStorage(layout, "req_x").saveOutputs(dir);

    expect(injected.renames).toEqual([[dir, layout.outputDir("req_x")]]);
    expect(await readFile(join(layout.outputDir("req_x"), "sub", "model.bin"), "utf8")).toBe(
      "weights",
    );
  });

  it("copies aside and renames into place when the rename fails with EXDEV", async () => {
    const dir = await outputFolder();
    const storage = new FsAttemptStorage(layout, "req_x");
    // Outputs of an earlier attempt are replaced too.
    await mkdir(layout.outputDir("req_x"), { recursive: true });
    await writeFile(join(layout.outputDir("req_x"), "stale.bin"), "old");
    injected.crossDevice = join(dataDir, "work");

    await storage.saveOutputs(dir);

    const target = layout.outputDir("req_x");
    expect((await readdir(target, { recursive: true })).sort()).toEqual([
      "result.json",
      "sub",
      "sub/model.bin",
    ]);
    expect(await readFile(join(target, "result.json"), "utf8")).toBe('{"ok":true}');
    // Nothing left aside next to the outputs.
    expect(await readdir(join(dataDir, "outputs"))).toEqual(["req_x"]);
    // The copy went in by a rename from beside the target, never from the work dir.
    const last = injected.renames.at(-1);
    expect(last?.[1]).toBe(target);
    expect(last?.[0]).toMatch(/req_x\.tmp-[0-9a-f]+$/);
  });
});
