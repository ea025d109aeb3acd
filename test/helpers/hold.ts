import { randomUUID } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * A file a test creates to let demo jobs go on (their `holdFile` input): a blocker held on
 * a condition the test releases, where a duration would race a loaded machine.
 */
export class Hold {
  readonly path = join(tmpdir(), `longrun-hold-${randomUUID()}`);

  /** Lets every job holding on this file go on. */
  release(): void {
    writeFileSync(this.path, "");
  }

  dispose(): void {
    rmSync(this.path, { force: true });
  }
}
