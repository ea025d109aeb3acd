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
}

export type ChangeEvent = "started" | "progress" | "completed";

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
