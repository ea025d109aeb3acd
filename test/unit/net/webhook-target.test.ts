/**
 * The one webhook target check, as its two users see it: the submit guard (400 or accepted)
 * and the deliverer (refused before any connection, retryable or not, or sent). Every row is
 * run through both, so they cannot drift apart again: a target the guard accepts is one the
 * deliverer calls, and a target refused at submit for good is never called later either.
 */
import { describe, expect, it } from "vitest";
import {
  createWebhookGuard,
  TargetRefusedError,
  vetTarget,
} from "../../../functions/adapters/net/webhook-guard.ts";
import { InvalidRequestError } from "../../../functions/core/errors.ts";
import { createDeliverer } from "../../../functions/webhooks/deliver.ts";

const DNS: Record<string, string[]> = {
  "hooks.example.com": ["93.184.216.34"],
  "internal.example.com": ["10.1.2.3"],
  "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
  "empty.example.com": [],
};
const resolve = async (host: string) => {
  const found = DNS[host];
  if (!found) throw new Error(`ENOTFOUND ${host}`);
  return found;
};

/** What the delivery check comes to without connecting anywhere. */
type AtDelivery = "sent" | "refused" | "refused, retryable";

/** [URL, allowPrivate, accepted at submit, at delivery] */
const TABLE: [string, boolean, boolean, AtDelivery][] = [
  ["https://hooks.example.com/x", false, true, "sent"],
  ["https://93.184.216.34:8443/x", false, true, "sent"],
  ["http://hooks.example.com/x", false, false, "refused"],
  ["ftp://hooks.example.com/x", false, false, "refused"],
  ["ftp://127.0.0.1/x", true, false, "refused"],
  ["not a url", false, false, "refused"],
  ["not a url", true, false, "refused"],
  // Credentials were let through at submit when private targets were allowed, and refused
  // at delivery: the drift this table exists for.
  ["https://user:pw@hooks.example.com/", false, false, "refused"],
  ["http://user:pw@127.0.0.1:9/", true, false, "refused"],
  ["https://internal.example.com/", false, false, "refused"],
  ["https://internal.example.com/", true, true, "sent"],
  ["https://mixed.example.com/", false, false, "refused"],
  ["https://127.0.0.1/", false, false, "refused"],
  ["http://127.0.0.1:9/", true, true, "sent"],
  ["https://[::ffff:169.254.169.254]/", false, false, "refused"],
  ["https://168.63.129.16/", false, false, "refused"],
  ["https://nowhere.example.com/", false, false, "refused, retryable"],
  ["https://empty.example.com/", false, false, "refused, retryable"],
  // Resolution is checked even when private targets are allowed (it was skipped at submit).
  ["https://nowhere.example.com/", true, false, "refused, retryable"],
];

describe("one webhook target check for submit and delivery", () => {
  it.each(TABLE)(
    "%s (allowPrivate %s): submit %s, delivery %s",
    async (url, allowPrivate, accepted, atDelivery) => {
      const guard = createWebhookGuard({ allowPrivate, resolve });
      if (accepted) {
        await expect(guard(url)).resolves.toBeUndefined();
      } else {
        const error = await guard(url).then(
          () => null,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(InvalidRequestError);
        expect((error as InvalidRequestError).message).toMatch(/^webhook\.url /);
      }

      const vetted = await vetTarget(url, { allowPrivate, resolve }).then(
        (t) => t,
        (e: unknown) => e,
      );
      if (atDelivery === "sent") {
        expect(vetted).toMatchObject({ address: expect.any(String) });
      } else {
        expect(vetted).toBeInstanceOf(TargetRefusedError);
        expect((vetted as TargetRefusedError).retryable).toBe(atDelivery === "refused, retryable");
        // The deliverer reports the same verdict, before any connection is tried.
        const result = await createDeliverer({ allowPrivate, resolve })({
          url,
          body: "{}",
          headers: {},
        });
        expect(result).toEqual({
          ok: false,
          error: (vetted as Error).message,
          retryable: atDelivery === "refused, retryable",
        });
      }
    },
  );
});
