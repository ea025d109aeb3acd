/**
 * The UploadStore contract: one suite every adapter runs (SQLite, DynamoDB on moto). It
 * speaks only the port; every test makes its own upload ids, so a shared backing store
 * cannot leak one test's items into another's assertions.
 */
import { monotonicFactory } from "ulidx";
import { afterAll, describe, expect, it } from "vitest";
import type { UploadStore } from "../../functions/core/ports.ts";
import {
  UPLOAD_LIFETIME_MS,
  type UploadRecord,
  UploadStatus,
} from "../../functions/core/upload.ts";

/** What an adapter's test file hands to {@link describeUploadStoreContract}. */
export interface UploadStoreFixture {
  store: UploadStore;
  cleanup(): Promise<void>;
}

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const nextUlid = monotonicFactory();

function upload(overrides: Partial<UploadRecord> = {}): UploadRecord {
  const createdAt = overrides.createdAt ?? T0;
  return {
    id: `upl_${nextUlid()}`,
    tenant: `tenant-${nextUlid().toLowerCase()}`,
    filename: "train.jsonl",
    size: 1234,
    sha256: null,
    status: UploadStatus.PENDING,
    createdAt,
    expiresAt: createdAt + UPLOAD_LIFETIME_MS,
    ...overrides,
  };
}

export function describeUploadStoreContract(name: string, open: () => Promise<UploadStoreFixture>) {
  describe(`UploadStore contract: ${name}`, () => {
    const fixture = open();
    afterAll(async () => (await fixture).cleanup());

    it("returns a created upload exactly as given", async () => {
      const { store } = await fixture;
      const u = upload({ sha256: "a".repeat(64), size: 0 });
      await store.create(u);
      expect(await store.get(u.id, T0)).toEqual(u);
    });

    it("answers null for an id it never saw", async () => {
      const { store } = await fixture;
      expect(await store.get(upload().id, T0)).toBeNull();
      expect(await store.markReady(upload().id, T0)).toBeNull();
    });

    it("refuses to create the same id twice and keeps the first", async () => {
      const { store } = await fixture;
      const u = upload();
      await store.create(u);
      await expect(store.create({ ...u, filename: "other" })).rejects.toThrow();
      expect((await store.get(u.id, T0))?.filename).toBe("train.jsonl");
    });

    it("marks an upload READY once, and again without change", async () => {
      const { store } = await fixture;
      const u = upload();
      await store.create(u);
      expect(await store.markReady(u.id, T0 + 1)).toEqual({ ...u, status: UploadStatus.READY });
      expect(await store.markReady(u.id, T0 + 2)).toEqual({ ...u, status: UploadStatus.READY });
      expect((await store.get(u.id, T0 + 3))?.status).toBe(UploadStatus.READY);
    });

    it("reads an upload past its expiry as gone, and will not mark it READY", async () => {
      const { store } = await fixture;
      const u = upload();
      await store.create(u);
      expect(await store.get(u.id, u.expiresAt - 1)).not.toBeNull();
      expect(await store.get(u.id, u.expiresAt)).toBeNull();
      expect(await store.markReady(u.id, u.expiresAt)).toBeNull();
      expect((await store.get(u.id, u.expiresAt - 1))?.status).toBe(UploadStatus.PENDING);
    });

    it("deletes an upload once", async () => {
      const { store } = await fixture;
      if (!store.delete) return;
      const u = upload();
      await store.create(u);
      expect(await store.delete(u.id)).toBe(true);
      expect(await store.get(u.id, T0)).toBeNull();
      expect(await store.delete(u.id)).toBe(false);
    });

    it("finds expired uploads, oldest expiry first, and only those", async () => {
      const { store } = await fixture;
      if (!store.findExpired) return;
      // Far in the future of every other test's uploads, so they all count as expired too:
      // look only at this test's own.
      const base = T0 + 1000 * UPLOAD_LIFETIME_MS;
      const late = upload({ createdAt: base - UPLOAD_LIFETIME_MS + 20 });
      const early = upload({ createdAt: base - UPLOAD_LIFETIME_MS + 10 });
      const live = upload({ createdAt: base });
      for (const u of [late, early, live]) await store.create(u);
      const found = await store.findExpired(base + 30, 10_000);
      const mine = found.filter((id) => [late.id, early.id, live.id].includes(id));
      expect(mine).toEqual([early.id, late.id]);
    });
  });
}
