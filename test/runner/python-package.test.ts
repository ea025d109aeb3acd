import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { runAttempt } from "../../jobs/runner/index.ts";
import { REPO, RecordingStorage, removeDir, tempDir } from "./helpers.ts";

let root: string;
beforeEach(async () => {
  root = await tempDir("python-package");
});
afterEach(async () => {
  await removeDir(root);
});

const PACKAGE_SRC = join(REPO, "jobs/python/src");

/** Runs a Python one-liner as the job; what it wrote to result.json. */
async function runPython(source: string, env?: Record<string, string>): Promise<unknown> {
  const storage = new RecordingStorage(root);
  const result = await runAttempt({
    command: ["python3", "-c", source],
    ...(env ? { env } : {}),
    job: { requestId: "req_py", queue: "py", attempt: 1 },
    workDir: join(root, "work"),
    input: { hello: "python" },
    storage,
    timeoutSeconds: 30,
    cancelGraceSeconds: 5,
    pollIntervalMs: 25,
  });
  expect(result.outcome).toBe("succeeded");
  return JSON.parse(await readFile(join(storage.outputs, "result.json"), "utf8"));
}

describe("the longrun Python package in embedded jobs", () => {
  it("is importable by a job without being installed: the runner puts it on PYTHONPATH", async () => {
    const seen = await runPython(
      "import os, longrun; from longrun import job; " +
        "job.write_result({'input': job.input, 'file': longrun.__file__, 'path': os.environ['PYTHONPATH']})",
    );
    expect(seen).toEqual({
      input: { hello: "python" },
      file: join(PACKAGE_SRC, "longrun", "__init__.py"),
      path: PACKAGE_SRC,
    });
  });

  it("comes after the folders the queue's env puts on PYTHONPATH", async () => {
    const seen = await runPython(
      "import os, json; open(os.environ['LONGRUN_OUTPUT_DIR'] + '/result.json', 'w').write(json.dumps(os.environ['PYTHONPATH']))",
      { PYTHONPATH: "/opt/mine" },
    );
    expect(seen).toBe(`/opt/mine:${PACKAGE_SRC}`);
  });
});
