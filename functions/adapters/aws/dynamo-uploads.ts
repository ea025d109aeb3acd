import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  DeleteCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  UpdateCommand,
} from "@aws-sdk/lib-dynamodb";
import type { UploadStore } from "../../core/ports.ts";
import { type UploadRecord, UploadStatus } from "../../core/upload.ts";
import { TABLE_KEY, TTL_ATTRIBUTE } from "./definitions.ts";

const UPLOAD_SK = "UPL";

/** Key of an upload item: `UPL#<id>` / `UPL` (definitions.ts lists every item kind). */
export function uploadItemKey(id: string): Record<string, string> {
  return { [TABLE_KEY.partitionKey]: `UPL#${id}`, [TABLE_KEY.sortKey]: UPLOAD_SK };
}

function fromItem(item: Record<string, unknown>): UploadRecord {
  const i = item as unknown as UploadRecord;
  return {
    id: i.id,
    tenant: i.tenant,
    filename: i.filename,
    size: i.size,
    sha256: i.sha256 ?? null,
    status: i.status,
    createdAt: i.createdAt,
    expiresAt: i.expiresAt,
  };
}

function isConditionalCheckFailed(error: unknown): boolean {
  return (error as { name?: string } | null)?.name === "ConditionalCheckFailedException";
}

/**
 * {@link UploadStore} as items of the request table. Each item carries a `ttl` at its
 * expiry, so DynamoDB deletes it without a sweep; TTL deletes up to days late, so reads
 * treat an item past `expiresAt` as gone. Every call is one GetItem, PutItem or UpdateItem.
 */
export class DynamoUploadStore implements UploadStore {
  readonly #doc: DynamoDBDocumentClient;

  constructor(
    client: DynamoDBClient | DynamoDBDocumentClient,
    private readonly tableName: string,
  ) {
    this.#doc =
      client instanceof DynamoDBDocumentClient
        ? client
        : DynamoDBDocumentClient.from(client, {
            marshallOptions: { removeUndefinedValues: true },
          });
  }

  async create(upload: UploadRecord): Promise<void> {
    await this.#doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          ...uploadItemKey(upload.id),
          ...upload,
          [TTL_ATTRIBUTE]: Math.ceil(upload.expiresAt / 1000),
        },
        // Ids are fresh; the condition makes a collision an error rather than an overwrite.
        ConditionExpression: "attribute_not_exists(#pk)",
        ExpressionAttributeNames: { "#pk": TABLE_KEY.partitionKey },
      }),
    );
  }

  async get(id: string, now: number): Promise<UploadRecord | null> {
    const out = await this.#doc.send(
      new GetCommand({ TableName: this.tableName, Key: uploadItemKey(id), ConsistentRead: true }),
    );
    if (!out.Item) return null;
    const upload = fromItem(out.Item);
    return upload.expiresAt > now ? upload : null;
  }

  async markReady(id: string, now: number): Promise<UploadRecord | null> {
    try {
      const out = await this.#doc.send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: uploadItemKey(id),
          UpdateExpression: "SET #status = :ready",
          ConditionExpression: "attribute_exists(#pk) AND #expiresAt > :now",
          ExpressionAttributeNames: {
            "#pk": TABLE_KEY.partitionKey,
            "#status": "status",
            "#expiresAt": "expiresAt",
          },
          ExpressionAttributeValues: { ":ready": UploadStatus.READY, ":now": now },
          ReturnValues: "ALL_NEW",
        }),
      );
      return out.Attributes ? fromItem(out.Attributes) : null;
    } catch (error) {
      if (isConditionalCheckFailed(error)) return null;
      throw error;
    }
  }

  /** Deletes the item at once (DynamoDB TTL does it otherwise); false when it was gone. */
  async delete(id: string): Promise<boolean> {
    const out = await this.#doc.send(
      new DeleteCommand({
        TableName: this.tableName,
        Key: uploadItemKey(id),
        ReturnValues: "ALL_OLD",
      }),
    );
    return out.Attributes !== undefined;
  }
}
