/**
 * Counts what longrun's SDK clients send, per phase of whatever the caller is measuring:
 * every HTTP attempt by service and operation (retries included), and DynamoDB capacity.
 *
 * Three middlewares go on each client's stack:
 * - `deserialize` step: runs inside the retry middleware (finalizeRequest step), so once per
 *   HTTP attempt. That is what AWS bills and throttles: an SDK retry is a second request.
 * - `initialize` step (outermost, once per `send`): counts sends, injects
 *   `ReturnConsumedCapacity: "TOTAL"` into DynamoDB operations that accept it, and sums the
 *   `ConsumedCapacity` the endpoint returned.
 * - `build` step (DynamoDB only; the input is marshalled by then, even for lib-dynamodb's
 *   document commands): recomputes the capacity from item sizes by DynamoDB's documented
 *   rules (see capacity.ts), because moto returns fixed placeholder figures.
 */
import type { BatchClient } from "@aws-sdk/client-batch";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { AwsClients } from "../functions/adapters/aws/wiring.ts";
import {
  type CapacityCalculator,
  type CapacityUnits,
  type DynamoInput,
  zeroUnits,
} from "./capacity.ts";

/** DynamoDB operations whose input takes ReturnConsumedCapacity (API reference). */
export const CAPACITY_OPERATIONS: ReadonlySet<string> = new Set([
  "GetItem",
  "PutItem",
  "UpdateItem",
  "DeleteItem",
  "Query",
  "Scan",
  "BatchGetItem",
  "BatchWriteItem",
  "TransactGetItems",
  "TransactWriteItems",
  "ExecuteStatement",
  "BatchExecuteStatement",
  "ExecuteTransaction",
]);

/** What one phase cost. */
export interface PhaseUsage {
  /** "Service Operation" → HTTP requests sent (retries included). */
  calls: Record<string, number>;
  /** "Service Operation" → `send` calls (calls − sends = SDK retries). */
  sends: Record<string, number>;
  /** Capacity computed from item sizes (capacity.ts). */
  computed: CapacityUnits;
  /** Capacity as the endpoint reported it in `ConsumedCapacity`. */
  reported: CapacityUnits;
  /** Whether every capacity-capable DynamoDB call returned a ConsumedCapacity. */
  reportedComplete: boolean;
}

function emptyUsage(): PhaseUsage {
  return {
    calls: {},
    sends: {},
    computed: zeroUnits(),
    reported: zeroUnits(),
    reportedComplete: true,
  };
}

type AnyClient = AwsClients[keyof AwsClients];
type Stack = BatchClient["middlewareStack"];

/** One middleware type fits every client's stack. */
function stackOf(client: AnyClient): Stack {
  return client.middlewareStack as unknown as Stack;
}

/** "DynamoDBClient" → "DynamoDB"; "PutItemCommand" → "PutItem". */
function serviceOf(clientName: unknown): string {
  return String(clientName ?? "?").replace(/Client$/, "");
}
function operationOf(commandName: unknown): string {
  return String(commandName ?? "?").replace(/Command$/, "");
}

interface ReportedCapacity {
  CapacityUnits?: number;
  ReadCapacityUnits?: number;
  WriteCapacityUnits?: number;
}

/** Sums a ConsumedCapacity (one object or a list); null when there is none. */
function sumReported(value: unknown, op: string): CapacityUnits | null {
  if (value === undefined || value === null) return null;
  const list = (Array.isArray(value) ? value : [value]) as ReportedCapacity[];
  const out = zeroUnits();
  const writes =
    /Put|Update|Delete|Write|Transaction|Execute/.test(op) && op !== "ExecuteStatement";
  for (const c of list) {
    if (c.ReadCapacityUnits !== undefined || c.WriteCapacityUnits !== undefined) {
      out.read += c.ReadCapacityUnits ?? 0;
      out.write += c.WriteCapacityUnits ?? 0;
    } else if (writes) {
      out.write += c.CapacityUnits ?? 0;
    } else {
      out.read += c.CapacityUnits ?? 0;
    }
  }
  return out;
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

/** Meters a set of clients; `phase()` says where the calls that follow belong. */
export class AwsMeter {
  readonly #phases = new Map<string, PhaseUsage>();
  #current = "setup";
  readonly #capacity: CapacityCalculator;

  constructor(clients: AwsClients, capacity: CapacityCalculator) {
    this.#capacity = capacity;
    for (const client of Object.values(clients)) this.#instrument(client);
  }

  /** Calls from now on count towards `name`. */
  phase(name: string): void {
    this.#current = name;
  }

  /** Every phase measured so far, in the order first entered. */
  usage(): Map<string, PhaseUsage> {
    return this.#phases;
  }

  /** Forgets everything measured (the next lifecycle starts from zero). */
  reset(): void {
    this.#phases.clear();
  }

  #usage(): PhaseUsage {
    let u = this.#phases.get(this.#current);
    if (!u) {
      u = emptyUsage();
      this.#phases.set(this.#current, u);
    }
    return u;
  }

  #instrument(client: AnyClient): void {
    const stack = stackOf(client);
    stack.add(
      (next, context) => async (args) => {
        bump(
          this.#usage().calls,
          `${serviceOf(context.clientName)} ${operationOf(context.commandName)}`,
        );
        return next(args);
      },
      { step: "deserialize", name: "benchCountAttempts", priority: "high" },
    );
    stack.add(
      (next, context) => async (args) => {
        const service = serviceOf(context.clientName);
        const op = operationOf(context.commandName);
        const usage = this.#usage();
        bump(usage.sends, `${service} ${op}`);
        const capable = service === "DynamoDB" && CAPACITY_OPERATIONS.has(op);
        if (capable) {
          (args.input as Record<string, unknown>).ReturnConsumedCapacity = "TOTAL";
        }
        const result = await next(args);
        if (capable) {
          const reported = sumReported(
            (result.output as { ConsumedCapacity?: unknown }).ConsumedCapacity,
            op,
          );
          if (reported) {
            usage.reported.read += reported.read;
            usage.reported.write += reported.write;
          } else {
            usage.reportedComplete = false;
          }
        }
        return result;
      },
      { step: "initialize", name: "benchCountSends", priority: "high" },
    );
    if (!(client instanceof DynamoDBClient)) return;
    stack.add(
      (next, context) => async (args) => {
        const op = operationOf(context.commandName);
        if (!CAPACITY_OPERATIONS.has(op)) return next(args);
        const usage = this.#usage();
        return this.#capacity.measure(
          op,
          args.input as DynamoInput,
          () => next(args),
          (units) => {
            usage.computed.read += units.read;
            usage.computed.write += units.write;
          },
        );
      },
      { step: "build", name: "benchComputeCapacity", priority: "low" },
    );
  }
}
