import { describe, expect, it } from "vitest";
import {
  backoffSchedule,
  JITTER,
  MAX_ATTEMPTS,
  nextAttemptAt,
  RETRY_DELAYS_MS,
} from "../../../functions/webhooks/schedule.ts";

const DAY = 24 * 3_600_000;

/** Times of every try after the first at t=0, with the jitter fixed by `r`. */
function tryTimes(r: number): number[] {
  const times = [0];
  for (let made = 1; ; made++) {
    const next = nextAttemptAt(made, times[times.length - 1] ?? 0, () => r);
    if (next === null) return times;
    times.push(next);
  }
}

describe("webhook retry schedule", () => {
  it("follows the documented table without jitter", () => {
    expect(RETRY_DELAYS_MS).toEqual([
      5_000, 30_000, 120_000, 600_000, 1_800_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
    ]);
    expect(MAX_ATTEMPTS).toBe(10);
    // random 0.5 is the middle of the jitter band: exactly the nominal delays
    expect(tryTimes(0.5).at(-1)).toBe(160_955_000);
  });

  it("first retries after about 5 s, and makes at least 8 tries over at least a day", () => {
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const times = tryTimes(r);
      expect(times).toHaveLength(MAX_ATTEMPTS);
      expect(times.length).toBeGreaterThanOrEqual(8);
      expect(times[1]).toBeGreaterThanOrEqual(4_500);
      expect(times[1]).toBeLessThanOrEqual(5_500);
      expect(times.at(-1)).toBeGreaterThanOrEqual(DAY);
      // strictly growing gaps: exponential-ish
      for (let i = 2; i < times.length; i++) {
        expect(times[i]! - times[i - 1]!).toBeGreaterThan(times[i - 1]! - times[i - 2]!);
      }
    }
  });

  it("jitters each delay within ±10 % and gives up after the last try", () => {
    const now = 1_000_000;
    for (let made = 1; made < MAX_ATTEMPTS; made++) {
      const nominal = RETRY_DELAYS_MS[made - 1]!;
      const lo = nextAttemptAt(made, now, () => 0)!;
      const hi = nextAttemptAt(made, now, () => 0.999999)!;
      expect(lo - now).toBe(Math.round(nominal * (1 - JITTER)));
      expect(hi - now).toBeLessThanOrEqual(Math.round(nominal * (1 + JITTER)));
      expect(hi).toBeGreaterThan(lo);
    }
    expect(nextAttemptAt(MAX_ATTEMPTS, now)).toBeNull();
    expect(backoffSchedule.nextAttemptAt(MAX_ATTEMPTS + 3, now)).toBeNull();
    expect(() => nextAttemptAt(0, now)).toThrow(RangeError);
  });
});
