import { describe, expect, it } from "vitest";
import { newRequestId, newUploadId } from "../../../functions/adapters/ids.ts";
import { REQUEST_ID_PATTERN, UPLOAD_ID_PATTERN } from "../../../functions/http/schemas.ts";

describe("ids", () => {
  it("makes request ids that increase in the order they were made, all distinct", () => {
    // Act
    const ids = Array.from({ length: 20_000 }, () => newRequestId());

    // Assess
    expect(ids.every((id) => REQUEST_ID_PATTERN.test(id))).toBe(true);
    expect(ids.every((id, i) => i === 0 || id > (ids[i - 1] as string))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("draws the random part of a new millisecond's id over all 32 characters", async () => {
    // Prepare: the first character of each millisecond's random part is drawn, not counted.
    const firsts = new Set<string>();
    const deadline = Date.now() + 5_000;

    // Act
    while (firsts.size < 32 && Date.now() < deadline) {
      const ms = Date.now();
      while (Date.now() === ms) {
        // wait for the next millisecond: its first id draws fresh randomness
      }
      firsts.add(newUploadId().slice(4 + 10, 4 + 11));
    }

    // Assess
    expect(firsts.size).toBe(32);
    expect(UPLOAD_ID_PATTERN.test(newUploadId())).toBe(true);
  });
});
