import type { QueueConfig } from "../../config/schema.ts";
import { NotFoundError } from "../errors.ts";
import type {
  Clock,
  Compute,
  DispatchTrigger,
  FileStore,
  Ids,
  LogStore,
  RequestStore,
  ResultStore,
  UploadStore,
  WebhookGuard,
} from "../ports.ts";
import type { RequestRecord } from "../request.ts";

/** Everything a use case may need; each takes only the ports it uses. */
export interface CoreDeps {
  store: RequestStore;
  trigger: DispatchTrigger;
  compute: Compute;
  results: ResultStore;
  logs: LogStore;
  clock: Clock;
  ids: Ids;
  queues: Readonly<Record<string, QueueConfig>>;
  webhookGuard?: WebhookGuard;
  /** Upload records; absent where uploads are not served (a submit naming files is refused). */
  uploads?: UploadStore;
  /** Upload bytes, request files and checkpoint copies; present with `uploads`. */
  files?: FileStore;
  /** Largest upload accepted, in bytes (`LONGRUN_MAX_UPLOAD_BYTES`). */
  maxUploadBytes?: number;
  /** Told of every state change a use case made (webhooks, metrics). Must not throw. */
  onChange?: (request: RequestRecord, event: ChangeEvent) => void;
  /**
   * Told of lifecycle facts that are no webhook event: submits, every RUNNING of an
   * attempt, every attempt's end (metrics). Called after the write committed. Must not throw.
   */
  observe?: (event: LifecycleEvent) => void;
}

/** What {@link CoreDeps.observe} hears; `request` is the record as the write left it. */
export type LifecycleEvent =
  /** A new request was accepted (a replayed submit is no new request). */
  | { type: "submitted"; request: RequestRecord }
  /** An attempt's job runs (any attempt, not only the first). */
  | { type: "running"; request: RequestRecord; attempt: number; at: number }
  /**
   * An attempt ended: the request finished or its next attempt was set up. `startedAt` is
   * when the attempt's job began to run, where the backend says so (AWS Batch does).
   */
  | {
      type: "attemptEnded";
      request: RequestRecord;
      attempt: number;
      at: number;
      outcome: "succeeded" | "failed" | "timeout" | "lost";
      startedAt?: number | undefined;
    };

export type ChangeEvent = "started" | "progress" | "completed";

/** Something that wants to hear of state changes (webhooks, metrics, the queue history). */
export interface LifecycleListener {
  onChange?(request: RequestRecord, event: ChangeEvent): void;
  observe?(event: LifecycleEvent): void;
}

/**
 * The `onChange` and `observe` hooks of several listeners: each is told in turn, and one
 * that throws neither stops the others nor reaches the use case.
 */
export function listenAll(
  listeners: readonly LifecycleListener[],
): Required<Pick<CoreDeps, "onChange" | "observe">> {
  return {
    onChange(request, event) {
      for (const l of listeners) {
        try {
          l.onChange?.(request, event);
        } catch {
          // Must not throw (CoreDeps.onChange).
        }
      }
    },
    observe(event) {
      for (const l of listeners) {
        try {
          l.observe?.(event);
        } catch {
          // Must not throw (CoreDeps.observe).
        }
      }
    },
  };
}

export function queueOrThrow(
  queues: Readonly<Record<string, QueueConfig>>,
  name: string,
): QueueConfig {
  const q = Object.hasOwn(queues, name) ? queues[name] : undefined;
  if (!q) throw new NotFoundError("queue", name);
  return q;
}

/** A tenant sees only its own requests: another tenant's id is "not found". */
export async function getOwned(
  store: RequestStore,
  tenant: string,
  id: string,
): Promise<RequestRecord> {
  const r = await store.get(id);
  if (!r || r.tenant !== tenant) throw new NotFoundError("request", id);
  return r;
}
