/**
 * When a failed webhook delivery is tried again. SPEC §2: first retry after about 5 s, at
 * least 8 tries over at least a day.
 *
 * | try | after the previous try | after the first try (nominal) |
 * |-----|------------------------|-------------------------------|
 * | 1   | —  (at once)           | 0                             |
 * | 2   | 5 s                    | 5 s                           |
 * | 3   | 30 s                   | 35 s                          |
 * | 4   | 2 min                  | 2 min 35 s                    |
 * | 5   | 10 min                 | 12 min 35 s                   |
 * | 6   | 30 min                 | 42 min 35 s                   |
 * | 7   | 2 h                    | 2 h 42 min 35 s               |
 * | 8   | 6 h                    | 8 h 42 min 35 s               |
 * | 9   | 12 h                   | 20 h 42 min 35 s              |
 * | 10  | 24 h                   | 44 h 42 min 35 s (160 955 s)  |
 *
 * Each delay is scaled by a jitter factor in [0.9, 1.1) so that deliveries failing together
 * do not retry in lockstep; even with the smallest factor the tenth try comes 40 h 14 min
 * after the first. After the tenth failure the delivery is dead (kept for inspection).
 */

/** Delay before try n+2 after try n+1 failed, in milliseconds (index n). */
export const RETRY_DELAYS_MS: readonly number[] = [
  5_000,
  30_000,
  2 * 60_000,
  10 * 60_000,
  30 * 60_000,
  2 * 3_600_000,
  6 * 3_600_000,
  12 * 3_600_000,
  24 * 3_600_000,
];

/** Tries a delivery gets in all: the first plus one per retry delay. */
export const MAX_ATTEMPTS = RETRY_DELAYS_MS.length + 1;

/** Jitter: each delay is multiplied by a factor in [1 - JITTER, 1 + JITTER). */
export const JITTER = 0.1;

/** The retry policy the worker follows; {@link backoffSchedule} is the default. */
export interface RetrySchedule {
  /**
   * When to try again after `attemptsMade` tries (1 or more) have failed, in epoch ms, or
   * null when the delivery has used all its tries and is dead.
   * @param random a number in [0, 1) (Math.random by default) that picks the jitter.
   */
  nextAttemptAt(attemptsMade: number, now: number, random?: () => number): number | null;
}

/**
 * {@link RetrySchedule.nextAttemptAt} of the table above: `now` plus the delay after try
 * `attemptsMade`, jittered by ±10 %; null after {@link MAX_ATTEMPTS} tries.
 */
export function nextAttemptAt(
  attemptsMade: number,
  now: number,
  random: () => number = Math.random,
): number | null {
  if (!Number.isInteger(attemptsMade) || attemptsMade < 1) {
    throw new RangeError(`attemptsMade must be a positive integer, got ${attemptsMade}`);
  }
  const delay = RETRY_DELAYS_MS[attemptsMade - 1];
  if (delay === undefined) return null;
  const factor = 1 - JITTER + 2 * JITTER * Math.min(Math.max(random(), 0), 1);
  return now + Math.round(delay * factor);
}

/** The default schedule: {@link nextAttemptAt}. */
export const backoffSchedule: RetrySchedule = { nextAttemptAt };
