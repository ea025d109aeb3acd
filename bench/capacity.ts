/**
 * DynamoDB capacity from item sizes, by the rules DynamoDB documents for on-demand tables
 * (Developer Guide: "Item sizes and formats", "Read/write capacity mode", "Global secondary
 * indexes: provisioned throughput considerations", "Transactions: capacity"):
 *
 * - Item size: attribute name bytes (UTF-8) + value sizes. String: UTF-8 bytes. Number:
 *   1 byte per 2 significant digits + 1. Binary: bytes. Boolean, null: 1. List or map:
 *   3 bytes + 1 byte per element + the elements (a map's element includes its key name).
 *   Sets: the sum of their elements.
 * - Writes: 1 write unit per 1 KB (rounded up, at least 1) of the larger of the item before
 *   and after the write; a transactional write costs 2 per 1 KB. A write that fails its
 *   condition is charged as well (on the item as it stands).
 * - Index writes (GSI): an item entering an index costs one write of its index entry,
 *   leaving costs one, a change of an index key costs two (delete + put), a change of a
 *   projected non-key attribute costs one; no change costs nothing. The entry is the whole
 *   item for projection ALL, the table and index keys for KEYS_ONLY. Charged at the standard
 *   rate (the doubling of transactions applies to the table write).
 * - Reads: 1 read unit per 4 KB strongly consistent, 0.5 eventually consistent (GSIs only
 *   allow eventually consistent reads), 2 transactional; GetItem and each BatchGetItem item
 *   round up on their own, a Query rounds up the sum of everything it read; an empty answer
 *   still costs the minimum (one 4 KB step).
 *
 * Sizes come from the table itself: the calculator reads the touched items (before and
 * after a write, after a read) through its own client, which is not metered.
 */
import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  type QueryCommandInput,
  ScanCommand,
  type ScanCommandInput,
} from "@aws-sdk/client-dynamodb";

export interface CapacityUnits {
  read: number;
  write: number;
}

export function zeroUnits(): CapacityUnits {
  return { read: 0, write: 0 };
}

type Item = Record<string, AttributeValue>;

/** A table's key attributes and global secondary indexes. */
export interface TableShape {
  partitionKey: string;
  sortKey?: string;
  indexes: readonly {
    name: string;
    partitionKey: string;
    sortKey?: string;
    projection: "ALL" | "KEYS_ONLY";
  }[];
}

const KB = 1024;
const READ_STEP = 4 * KB;

function utf8(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/** Size of a DynamoDB number: 1 byte per two significant digits, plus 1. */
function numberSize(n: string): number {
  const digits = n.replace(/^[-+]/, "").replace(/e.*$/i, "").replace(".", "");
  const significant = digits.replace(/^0+/, "").replace(/0+$/, "");
  return Math.ceil(Math.max(significant.length, 1) / 2) + 1;
}

/** Size of one attribute value by the documented rules. */
export function valueSize(v: AttributeValue): number {
  if (v.S !== undefined) return utf8(v.S);
  if (v.N !== undefined) return numberSize(v.N);
  if (v.B !== undefined) return v.B.byteLength;
  if (v.BOOL !== undefined || v.NULL !== undefined) return 1;
  if (v.SS !== undefined) return v.SS.reduce((n, s) => n + utf8(s), 0);
  if (v.NS !== undefined) return v.NS.reduce((n, s) => n + numberSize(s), 0);
  if (v.BS !== undefined) return v.BS.reduce((n, b) => n + b.byteLength, 0);
  if (v.L !== undefined) return 3 + v.L.reduce((n, e) => n + 1 + valueSize(e), 0);
  if (v.M !== undefined) {
    return 3 + Object.entries(v.M).reduce((n, [k, e]) => n + 1 + utf8(k) + valueSize(e), 0);
  }
  return 0;
}

/** Size of an item: every attribute's name and value. */
export function itemSize(item: Item | undefined): number {
  if (!item) return 0;
  return Object.entries(item).reduce((n, [k, v]) => n + utf8(k) + valueSize(v), 0);
}

/** Write units for `bytes` (1 per KB, at least 1). */
export function writeUnits(bytes: number): number {
  return Math.max(1, Math.ceil(bytes / KB));
}

/** Read units for `bytes` read at once (1 per 4 KB strongly consistent, at least one step). */
export function readUnits(bytes: number, consistent: boolean): number {
  return Math.max(1, Math.ceil(bytes / READ_STEP)) * (consistent ? 1 : 0.5);
}

function keyOf(shape: TableShape, item: Item): Item {
  const key: Item = {};
  const pk = item[shape.partitionKey];
  if (pk) key[shape.partitionKey] = pk;
  if (shape.sortKey) {
    const sk = item[shape.sortKey];
    if (sk) key[shape.sortKey] = sk;
  }
  return key;
}

function sameValue(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (v && typeof v === "object") {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** One index's entry for `item`, or null when the item is not in that index (sparse). */
function indexEntry(
  shape: TableShape,
  index: TableShape["indexes"][number],
  item: Item | undefined,
) {
  if (!item) return null;
  const keys = [index.partitionKey, ...(index.sortKey ? [index.sortKey] : [])];
  if (keys.some((k) => item[k] === undefined)) return null;
  if (index.projection === "ALL") return item;
  const entry: Item = keyOf(shape, item);
  for (const k of keys) entry[k] = item[k] as AttributeValue;
  return entry;
}

/** Index write units caused by one item changing from `before` to `after`. */
export function indexWriteUnits(
  shape: TableShape,
  before: Item | undefined,
  after: Item | undefined,
): number {
  let units = 0;
  for (const index of shape.indexes) {
    const b = indexEntry(shape, index, before);
    const a = indexEntry(shape, index, after);
    if (!b && !a) continue;
    if (!b && a) units += writeUnits(itemSize(a));
    else if (b && !a) units += writeUnits(itemSize(b));
    else if (b && a) {
      const keys = [index.partitionKey, ...(index.sortKey ? [index.sortKey] : [])];
      if (keys.some((k) => !sameValue(b[k], a[k]))) {
        units += writeUnits(itemSize(b)) + writeUnits(itemSize(a));
      } else if (!sameValue(b, a)) {
        units += writeUnits(Math.max(itemSize(b), itemSize(a)));
      }
    }
  }
  return units;
}

type ShapeOf = (table: string) => TableShape;

interface TableKeyed {
  TableName: string;
  Key: Item;
}

/** The parts of a marshalled DynamoDB input the calculator reads. */
export interface DynamoInput {
  TableName?: string;
  Item?: Item;
  Key?: Item;
  ConsistentRead?: boolean;
  TransactItems?: {
    Put?: { TableName: string; Item: Item };
    Update?: TableKeyed;
    Delete?: TableKeyed;
    ConditionCheck?: TableKeyed;
    Get?: TableKeyed;
  }[];
  RequestItems?: Record<string, unknown>;
  KeyConditionExpression?: string;
  FilterExpression?: string;
  ExpressionAttributeNames?: Record<string, string>;
  [other: string]: unknown;
}

interface WriteTarget {
  table: string;
  key: Item;
  transactional: boolean;
  /** Only checked, never written (TransactWriteItems ConditionCheck). */
  checkOnly: boolean;
}

/** The items a write operation touches, from its marshalled input. */
function writeTargets(op: string, input: DynamoInput, shapes: ShapeOf): WriteTarget[] {
  const target = (table: string, key: Item, transactional = false, checkOnly = false) => ({
    table,
    key,
    transactional,
    checkOnly,
  });
  const table = input.TableName ?? "";
  switch (op) {
    case "PutItem":
      return [target(table, keyOf(shapes(table), input.Item ?? {}))];
    case "UpdateItem":
    case "DeleteItem":
      return [target(table, input.Key ?? {})];
    case "TransactWriteItems":
      return (input.TransactItems ?? []).flatMap((t) => {
        if (t.Put)
          return [target(t.Put.TableName, keyOf(shapes(t.Put.TableName), t.Put.Item), true)];
        const keyed = t.Update ?? t.Delete;
        if (keyed) return [target(keyed.TableName, keyed.Key, true)];
        if (t.ConditionCheck) {
          return [target(t.ConditionCheck.TableName, t.ConditionCheck.Key, true, true)];
        }
        return [];
      });
    case "BatchWriteItem":
      return Object.entries(input.RequestItems ?? {}).flatMap(([name, reqs]) =>
        (reqs as { PutRequest?: { Item: Item }; DeleteRequest?: { Key: Item } }[]).map((r) =>
          target(
            name,
            r.PutRequest ? keyOf(shapes(name), r.PutRequest.Item) : (r.DeleteRequest?.Key ?? {}),
          ),
        ),
      );
    default:
      return [];
  }
}

/** Measures the capacity of DynamoDB calls from item sizes (see the module comment). */
export class CapacityCalculator {
  readonly #client: DynamoDBClient;
  readonly #shapes: ShapeOf;

  /** `client` must not be metered: its reads are the calculator's own. */
  constructor(client: DynamoDBClient, shapes: ShapeOf) {
    this.#client = client;
    this.#shapes = shapes;
  }

  async #read(table: string, key: Item): Promise<Item | undefined> {
    const out = await this.#client.send(
      new GetItemCommand({ TableName: table, Key: key, ConsistentRead: true }),
    );
    return out.Item;
  }

  /**
   * Runs `call` (the operation `op` with the marshalled `input`), hands the read and write
   * units it consumed to `add` (a failed conditional write is charged too), and returns or
   * throws what the call did.
   */
  async measure<T>(
    op: string,
    input: DynamoInput,
    call: () => Promise<T>,
    add: (units: CapacityUnits) => void,
  ): Promise<T> {
    const targets = writeTargets(op, input, this.#shapes);
    if (targets.length === 0) {
      const result = await call();
      add({ read: await this.#readUnits(op, input), write: 0 });
      return result;
    }
    const before = await Promise.all(targets.map((t) => this.#read(t.table, t.key)));
    let failed = false;
    try {
      return await call();
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      const after = failed
        ? before
        : await Promise.all(targets.map((t) => this.#read(t.table, t.key)));
      let write = 0;
      targets.forEach((t, i) => {
        const b = before[i];
        const a = after[i];
        write += writeUnits(Math.max(itemSize(b), itemSize(a))) * (t.transactional ? 2 : 1);
        if (!failed && !t.checkOnly) write += indexWriteUnits(this.#shapes(t.table), b, a);
      });
      add({ read: 0, write });
    }
  }

  async #readUnits(op: string, input: DynamoInput): Promise<number> {
    switch (op) {
      case "GetItem": {
        const item = await this.#read(input.TableName ?? "", input.Key ?? {});
        return readUnits(itemSize(item), input.ConsistentRead === true);
      }
      case "BatchGetItem": {
        let units = 0;
        for (const [table, spec] of Object.entries(input.RequestItems ?? {})) {
          const s = spec as { Keys: Item[]; ConsistentRead?: boolean };
          for (const key of s.Keys) {
            units += readUnits(itemSize(await this.#read(table, key)), s.ConsistentRead === true);
          }
        }
        return units;
      }
      case "TransactGetItems": {
        let units = 0;
        for (const t of input.TransactItems ?? []) {
          if (!t.Get) continue;
          units += 2 * readUnits(itemSize(await this.#read(t.Get.TableName, t.Get.Key)), true);
        }
        return units;
      }
      case "Query":
      case "Scan": {
        // The same range again, asking for the entries themselves (a COUNT answer has none,
        // a projection trims them): what was read is what is charged.
        const again = await this.#client.send(
          op === "Query"
            ? new QueryCommand(asFullRead(input) as QueryCommandInput)
            : new ScanCommand(asFullRead(input) as ScanCommandInput),
        );
        const bytes = (again.Items ?? []).reduce((n, item) => n + itemSize(item), 0);
        return readUnits(bytes, input.ConsistentRead === true);
      }
      default:
        return 0;
    }
  }
}

/** A Query/Scan input without Select, projection or capacity request (names kept if used). */
function asFullRead(input: DynamoInput): DynamoInput {
  const {
    Select: _select,
    ReturnConsumedCapacity: _capacity,
    ProjectionExpression: _projection,
    ExpressionAttributeNames: names,
    ...rest
  } = input;
  const used = [rest.KeyConditionExpression, rest.FilterExpression]
    .filter((e): e is string => typeof e === "string")
    .join(" ");
  const kept = Object.fromEntries(
    Object.entries(names ?? {}).filter(([k]) =>
      new RegExp(`${k.replace(/[^A-Za-z0-9_#]/g, "\\$&")}(?![A-Za-z0-9_])`).test(used),
    ),
  );
  return Object.keys(kept).length > 0 ? { ...rest, ExpressionAttributeNames: kept } : rest;
}
