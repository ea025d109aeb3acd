import { mkdir, rename, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EMPTY_FOLDER, folderSignature } from "../../jobs/runner/checkpoint-signature.ts";
import { removeDir, tempDir } from "./helpers.ts";

let root: string;
let dir: string;
let clock: string;

beforeEach(async () => {
  root = await tempDir("signature");
  dir = join(root, "checkpoint");
  clock = join(root, ".clock");
  await mkdir(dir);
});
afterEach(async () => {
  await removeDir(root);
});

const sign = () => folderSignature(dir, clock);

/** A signature of the folder once its last change is old enough to be vouched for. */
async function settledSignature(): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const signature = await sign();
    if (signature !== null) return signature;
    await sleep(20);
  }
  throw new Error("the folder never became old enough to sign");
}

describe("folderSignature", () => {
  it("describes an empty folder by its content alone, and a missing one as unknown", async () => {
    expect(await sign()).toBe(EMPTY_FOLDER);
    await rm(dir, { recursive: true });
    expect(await sign()).toBeNull();
  });

  it("stays the same while nothing changes", async () => {
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "sub", "a.bin"), "aaaa");
    await writeFile(join(dir, "state.json"), "{}");

    const first = await settledSignature();

    expect(await sign()).toBe(first);
    expect(first).not.toBe(EMPTY_FOLDER);
  });

  it("changes for an in-place rewrite of the same size, a replacement, and names that come and go", async () => {
    await mkdir(join(dir, "sub"));
    await writeFile(join(dir, "sub", "a.bin"), "aaaa");
    const changes: Array<() => Promise<unknown>> = [
      () => writeFile(join(dir, "sub", "a.bin"), "bbbb"),
      async () => {
        await writeFile(join(dir, "sub", "a.tmp"), "bbbb");
        await rename(join(dir, "sub", "a.tmp"), join(dir, "sub", "a.bin"));
      },
      async () => {
        // Added and removed again: the same names, but the folder itself changed.
        await writeFile(join(dir, "sub", "x"), "");
        await rm(join(dir, "sub", "x"));
      },
      () => writeFile(join(dir, "new.json"), "1"),
    ];

    for (const change of changes) {
      const before = await settledSignature();
      await change();
      expect(await settledSignature()).not.toBe(before);
    }
  });

  it("never vouches for a folder that a change right after signing would leave unchanged", async () => {
    // A rewrite within the same timestamp tick keeps every timestamp: such a signature
    // must be refused (null) rather than equal to the one after the rewrite.
    const file = join(dir, "state.json");
    for (let i = 0; i < 50; i++) {
      await writeFile(file, `${i % 10}`);
      const before = await sign();
      await writeFile(file, `${(i + 1) % 10}`);
      const after = await sign();
      if (before !== null) expect(after).not.toBe(before);
    }
  });

  it("refuses a folder replaced by a symlink", async () => {
    const real = join(root, "real");
    await mkdir(real);
    await writeFile(join(real, "a"), "1");
    await rm(dir, { recursive: true });
    await symlink(real, dir);
    await sleep(50);

    expect(await sign()).toBeNull();
  });
});
