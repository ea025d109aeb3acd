/**
 * Uploads (SPEC §2 "Uploads"): inputs larger than a request body, PUT by the caller
 * straight to storage and then named in a submit's `files`.
 */

export const UploadStatus = {
  /** Created; its bytes have not arrived (or arrived with another length). */
  PENDING: "PENDING",
  /** Its bytes are stored with exactly the declared size. */
  READY: "READY",
} as const;
export type UploadStatus = (typeof UploadStatus)[keyof typeof UploadStatus];

/** An upload's record. Times are epoch milliseconds. */
export interface UploadRecord {
  id: string;
  tenant: string;
  filename: string;
  /** The exact byte count the caller declared and must PUT. */
  size: number;
  /** Lower-case hex SHA-256 the caller declared, checked against the bytes; null if none. */
  sha256: string | null;
  status: UploadStatus;
  createdAt: number;
  /** createdAt + {@link UPLOAD_LIFETIME_MS}: from then on the upload no longer exists. */
  expiresAt: number;
}

/** SPEC §2: an upload is deleted 24 hours after it was created. */
export const UPLOAD_LIFETIME_MS = 24 * 3_600_000;
/** How long a PUT URL is valid (SPEC: at least 15 minutes). */
export const UPLOAD_URL_TTL_SECONDS = 3600;
/** SPEC §2: a submit names at most this many files. */
export const MAX_FILES = 100;
/** SPEC §2 file names; "." and ".." are refused besides (they are folders, not files). */
export const FILE_NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
/** Upload ids are `upl_` + a ULID. */
export const UPLOAD_ID_PATTERN = /^upl_[0-9A-HJKMNP-TV-Z]{26}$/;

/** Whether `name` may name a file in LONGRUN_INPUT_DIR. */
export function isFileName(name: string): boolean {
  return FILE_NAME_PATTERN.test(name) && name !== "." && name !== "..";
}

/** Whether the upload has outlived its lifetime at `now` (it then reads as absent). */
export function uploadExpired(upload: Pick<UploadRecord, "expiresAt">, now: number): boolean {
  return upload.expiresAt <= now;
}
