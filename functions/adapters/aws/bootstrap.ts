/**
 * Runtime bootstrap of longrun's AWS data resources for the embedded server on an emulator
 * (LONGRUN_AWS_BOOTSTRAP=1) and for tests. A deployed stack gets the same resources from CDK;
 * both build from definitions.ts. Each resource kind has its own small exported function.
 */
import {
  type AttributeDefinition,
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  type GlobalSecondaryIndex,
  ResourceInUseException,
  ResourceNotFoundException,
  UpdateTableCommand,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from "@aws-sdk/client-dynamodb";
import { INDEXES, TABLE_KEY, TABLE_STREAM_VIEW, TTL_ATTRIBUTE } from "./definitions.ts";

/** How long {@link createTable} waits for a new table to become ACTIVE. */
const TABLE_ACTIVE_TIMEOUT_SECONDS = 120;

/** The CreateTable parameters of the request table, built from definitions.ts. */
export function requestTableDefinition(tableName: string): {
  TableName: string;
  AttributeDefinitions: AttributeDefinition[];
  KeySchema: { AttributeName: string; KeyType: "HASH" | "RANGE" }[];
  GlobalSecondaryIndexes: GlobalSecondaryIndex[];
  BillingMode: "PAY_PER_REQUEST";
  StreamSpecification: { StreamEnabled: true; StreamViewType: typeof TABLE_STREAM_VIEW };
} {
  const keyNames = new Set<string>([TABLE_KEY.partitionKey, TABLE_KEY.sortKey]);
  for (const index of Object.values(INDEXES)) {
    keyNames.add(index.partitionKey);
    keyNames.add(index.sortKey);
  }
  return {
    TableName: tableName,
    // Every key is a string: counters and times live in non-key attributes.
    AttributeDefinitions: [...keyNames].map((name) => ({
      AttributeName: name,
      AttributeType: "S",
    })),
    KeySchema: [
      { AttributeName: TABLE_KEY.partitionKey, KeyType: "HASH" },
      { AttributeName: TABLE_KEY.sortKey, KeyType: "RANGE" },
    ],
    GlobalSecondaryIndexes: Object.values(INDEXES).map((index) => ({
      IndexName: index.name,
      KeySchema: [
        { AttributeName: index.partitionKey, KeyType: "HASH" },
        { AttributeName: index.sortKey, KeyType: "RANGE" },
      ],
      Projection: { ProjectionType: index.projection },
    })),
    BillingMode: "PAY_PER_REQUEST",
    StreamSpecification: { StreamEnabled: true, StreamViewType: TABLE_STREAM_VIEW },
  };
}

/**
 * Creates the request table if it does not exist (on demand billing, every index of
 * {@link INDEXES}, the stream webhooks follow from), waits until it is ACTIVE, turns the
 * stream on for a table made without it, and turns on TTL on {@link TTL_ATTRIBUTE}.
 * Safe to call concurrently and repeatedly.
 * @throws Error when a table of that name exists without one of the indexes.
 */
export async function createTable(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    await client.send(new CreateTableCommand(requestTableDefinition(tableName)));
  } catch (error) {
    // Another process (or an earlier run) created it first: use it, after the checks below.
    if (!(error instanceof ResourceInUseException)) throw error;
  }
  await waitUntilTableExists(
    { client, maxWaitTime: TABLE_ACTIVE_TIMEOUT_SECONDS, minDelay: 1, maxDelay: 5 },
    { TableName: tableName },
  );
  const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
  const present = new Set((Table?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName));
  const missing = Object.values(INDEXES)
    .map((i) => i.name)
    .filter((name) => !present.has(name));
  if (missing.length > 0) {
    throw new Error(
      `table ${tableName} exists without the index(es) ${missing.join(", ")}; it was not made by this version of longrun`,
    );
  }
  if (!Table?.LatestStreamArn || Table.StreamSpecification?.StreamEnabled !== true) {
    await client.send(
      new UpdateTableCommand({
        TableName: tableName,
        StreamSpecification: { StreamEnabled: true, StreamViewType: TABLE_STREAM_VIEW },
      }),
    );
    await waitUntilTableExists(
      { client, maxWaitTime: TABLE_ACTIVE_TIMEOUT_SECONDS, minDelay: 1, maxDelay: 5 },
      { TableName: tableName },
    );
  }
  await enableTimeToLive(client, tableName);
}

/**
 * The ARN of the table's stream, checked to carry both images (webhooks are derived from
 * them).
 * @throws Error naming the table when it has no such stream.
 */
export async function tableStreamArn(client: DynamoDBClient, tableName: string): Promise<string> {
  const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
  const spec = Table?.StreamSpecification;
  if (
    !Table?.LatestStreamArn ||
    spec?.StreamEnabled !== true ||
    spec.StreamViewType !== TABLE_STREAM_VIEW
  ) {
    throw new Error(
      `table ${tableName} has no ${TABLE_STREAM_VIEW} stream; webhooks are derived from it`,
    );
  }
  return Table.LatestStreamArn;
}

/**
 * Turns on DynamoDB TTL on {@link TTL_ATTRIBUTE}. Already enabled is success; an emulator
 * that does not implement the TTL API is tolerated (TTL only deletes old items, nothing
 * correct depends on it).
 */
export async function enableTimeToLive(client: DynamoDBClient, tableName: string): Promise<void> {
  try {
    const { TimeToLiveDescription: ttl } = await client.send(
      new DescribeTimeToLiveCommand({ TableName: tableName }),
    );
    const status = ttl?.TimeToLiveStatus;
    if ((status === "ENABLED" || status === "ENABLING") && ttl?.AttributeName === TTL_ATTRIBUTE) {
      return;
    }
    await client.send(
      new UpdateTimeToLiveCommand({
        TableName: tableName,
        TimeToLiveSpecification: { Enabled: true, AttributeName: TTL_ATTRIBUTE },
      }),
    );
  } catch (error) {
    if (error instanceof ResourceNotFoundException) throw error;
    const name = (error as { name?: string }).name ?? "";
    const message = (error as { message?: string }).message ?? "";
    // AWS answers ValidationException when TTL was enabled by a racing bootstrap.
    if (name === "ValidationException" && /already enabled/i.test(message)) return;
    // Emulators without the TTL API (or with a partial one) must not stop start-up.
    if (
      name === "UnknownOperationException" ||
      name === "NotImplementedError" ||
      name === "NotImplemented"
    ) {
      return;
    }
    throw error;
  }
}
