/**
 * Reads a table's DynamoDB stream on the emulator the way the event-source mapping would,
 * and hands records over in the Lambda event's shape (moto runs no mapping without Docker).
 */
import {
  type _Record,
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  type GetRecordsCommandOutput,
  GetShardIteratorCommand,
} from "@aws-sdk/client-dynamodb-streams";
import type { DynamoDBStreamEvent } from "aws-lambda";
import { tableStreamArn } from "../../../functions/adapters/aws/bootstrap.ts";
import type { AwsClients } from "../../../functions/adapters/aws/wiring.ts";
import { awsClientConfig } from "../aws.ts";

/** Every record written since the reader was made (or last read), in stream order. */
export class StreamReader {
  readonly #streams = new DynamoDBStreamsClient(awsClientConfig());
  readonly #iterators = new Map<string, string>();
  #arn = "";

  constructor(
    private readonly clients: AwsClients,
    private readonly tableName: string,
  ) {}

  /** Starts at the stream's end: only later writes are read. */
  async start(): Promise<void> {
    this.#arn = await tableStreamArn(this.clients.dynamo, this.tableName);
    const { StreamDescription } = await this.#streams.send(
      new DescribeStreamCommand({ StreamArn: this.#arn }),
    );
    for (const shard of StreamDescription?.Shards ?? []) {
      const out = await this.#streams.send(
        new GetShardIteratorCommand({
          StreamArn: this.#arn,
          ShardId: shard.ShardId,
          ShardIteratorType: "LATEST",
        }),
      );
      if (shard.ShardId && out.ShardIterator) this.#iterators.set(shard.ShardId, out.ShardIterator);
    }
  }

  /** Records written since the last read. */
  async read(): Promise<_Record[]> {
    const got: _Record[] = [];
    for (const [shard, iterator] of this.#iterators) {
      let next: string | undefined = iterator;
      for (;;) {
        const out: GetRecordsCommandOutput = await this.#streams.send(
          new GetRecordsCommand({ ShardIterator: next }),
        );
        const records = out.Records ?? [];
        got.push(...records);
        const following = out.NextShardIterator;
        if (!following) {
          this.#iterators.delete(shard);
          break;
        }
        next = following;
        this.#iterators.set(shard, following);
        if (records.length === 0) break;
      }
    }
    return got;
  }

  /** Records of one request item, from {@link read}. */
  async readFor(requestId: string): Promise<_Record[]> {
    return (await this.read()).filter((r) => r.dynamodb?.Keys?.pk?.S === `REQ#${requestId}`);
  }

  close(): void {
    this.#streams.destroy();
  }
}

/** The Lambda event the mapping would make of `records`. */
export function streamEvent(records: readonly _Record[], tableName: string): DynamoDBStreamEvent {
  return {
    Records: records.map((r) => ({
      eventID: r.eventID,
      eventName: r.eventName,
      eventVersion: "1.1",
      eventSource: "aws:dynamodb",
      awsRegion: "us-east-1",
      eventSourceARN: `arn:aws:dynamodb:us-east-1:123456789012:table/${tableName}/stream/x`,
      dynamodb: {
        Keys: r.dynamodb?.Keys as never,
        NewImage: r.dynamodb?.NewImage as never,
        OldImage: r.dynamodb?.OldImage as never,
        SequenceNumber: r.dynamodb?.SequenceNumber,
        SizeBytes: r.dynamodb?.SizeBytes,
        StreamViewType: "NEW_AND_OLD_IMAGES",
      },
    })) as DynamoDBStreamEvent["Records"],
  };
}
