import { monotonicFactory } from "ulidx";

/**
 * Request ids: `req_` and a ULID from one monotonic generator per process. Within one
 * millisecond the ids still increase, so requests submitted in the same instant keep their
 * submit order in the ready index (its last tie-breaker is the id), and the generator
 * draws its randomness source once instead of per id, which the plain `ulid()` does.
 */
const nextUlid = monotonicFactory();

export function newRequestId(): string {
  return `req_${nextUlid()}`;
}

/** Upload ids: `upl_` and a ULID (SPEC §2 Uploads). */
export function newUploadId(): string {
  return `upl_${nextUlid()}`;
}
