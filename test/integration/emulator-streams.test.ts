/**
 * The test emulator's DynamoDB stream across a cancelled transaction (test/helpers/
 * moto_server.py): a reader that holds a shard iterator goes on seeing later writes, and
 * never a write of the cancelled transaction, as on DynamoDB. The local webhook poller and
 * the stream-driven tests rely on it.
 */
import {
  DeleteTableCommand,
  DynamoDBClient,
  PutItemCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import {
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
} from "@aws-sdk/client-dynamodb-streams";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTable, tableStreamArn } from "../../functions/adapters/aws/bootstrap.ts";
import { awsClientConfig, uniqueName } from "./aws.ts";

const dynamo = new DynamoDBClient(awsClientConfig());
const streams = new DynamoDBStreamsClient(awsClientConfig());
const table = uniqueName("longrun-streams");

beforeAll(async () => {
  await createTable(dynamo, table);
});

afterAll(async () => {
  await dynamo.send(new DeleteTableCommand({ TableName: table }));
  dynamo.destroy();
  streams.destroy();
});

/** A plain item of the request table's key shape. */
function item(pk: string): Record<string, { S: string }> {
  return { pk: { S: pk }, sk: { S: "R" } };
}

describe("the emulator's table stream", () => {
  it("keeps an open iterator reading after a cancelled transaction, without its writes", async () => {
    // Prepare: an iterator at the stream's end, as a poller holds one.
    const arn = await tableStreamArn(dynamo, table);
    const { StreamDescription } = await streams.send(new DescribeStreamCommand({ StreamArn: arn }));
    const shardId = StreamDescription?.Shards?.[0]?.ShardId;
    const { ShardIterator } = await streams.send(
      new GetShardIteratorCommand({
        StreamArn: arn,
        ShardId: shardId,
        ShardIteratorType: "LATEST",
      }),
    );
    await dynamo.send(new PutItemCommand({ TableName: table, Item: item("before") }));

    // Act: a transaction whose first write applies before its second one's condition fails.
    const cancelled = dynamo.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          { Put: { TableName: table, Item: item("cancelled") } },
          {
            Put: {
              TableName: table,
              Item: item("before"),
              ConditionExpression: "attribute_not_exists(pk)",
            },
          },
        ],
      }),
    );
    await expect(cancelled).rejects.toBeInstanceOf(TransactionCanceledException);
    await dynamo.send(new PutItemCommand({ TableName: table, Item: item("after") }));

    // Assess
    const seen: string[] = [];
    let iterator = ShardIterator;
    for (let reads = 0; iterator && reads < 5; reads++) {
      const out = await streams.send(new GetRecordsCommand({ ShardIterator: iterator }));
      for (const r of out.Records ?? []) seen.push(r.dynamodb?.Keys?.pk?.S ?? "?");
      iterator = out.NextShardIterator;
      if ((out.Records ?? []).length === 0) break;
    }
    expect(seen).toEqual(["before", "after"]);
  });
});
