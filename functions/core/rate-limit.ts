/**
 * The token bucket of SPEC §1 `rateLimit`, kept as one number: the generic cell rate
 * algorithm (GCRA). A bucket of `burst` tokens refilled at `requestsPerSecond` is the same
 * as a "theoretical arrival time" `at` that each accepted submit pushes one interval
 * further: a submit is accepted when `at` is at most `burst − 1` intervals ahead of now.
 * One number moved by a conditional write is what lets DynamoDB check it inside the
 * submit's own transaction; SQLite stores the same number.
 */
import type { RateLimit } from "../config/schema.ts";
import type { RateLimitState } from "./ports.ts";

/** Milliseconds between two tokens. */
export function tokenInterval(policy: RateLimit): number {
  return 1000 / policy.requestsPerSecond;
}

/** What taking one token at `now` from a bucket at `at` (null: never used) comes to. */
export type BucketDecision =
  | { allowed: true; at: number; state: RateLimitState }
  | { allowed: false; retryAfterSeconds: number; state: RateLimitState };

/** Rounded to microseconds, so that stored times stay short decimal numbers. */
function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function stateAt(policy: RateLimit, at: number, now: number): RateLimitState {
  const interval = tokenInterval(policy);
  const ahead = Math.max(0, at - now);
  return {
    policy,
    remaining: Math.max(
      0,
      Math.min(policy.burst, Math.floor((policy.burst * interval - ahead) / interval + 1e-9)),
    ),
    resetSeconds: Math.ceil(ahead / 1000),
  };
}

/** Takes one token at `now`; `at` is the stored arrival time (null: a full bucket). */
export function takeToken(policy: RateLimit, at: number | null, now: number): BucketDecision {
  const interval = tokenInterval(policy);
  const start = Math.max(at ?? now, now);
  const tolerance = (policy.burst - 1) * interval;
  if (start - now > tolerance + 1e-6) {
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((start - tolerance - now) / 1000)),
      state: stateAt(policy, start, now),
    };
  }
  const next = round(start + interval);
  return { allowed: true, at: next, state: stateAt(policy, next, now) };
}

/** The bucket as it stands at `now`, without taking a token (a replay is free). */
export function peekBucket(policy: RateLimit, at: number | null, now: number): RateLimitState {
  return stateAt(policy, Math.max(at ?? now, now), now);
}
