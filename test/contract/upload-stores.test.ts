import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { ulid } from "ulidx";
import { inject } from "vitest";
import { createTable } from "../../functions/adapters/aws/bootstrap.ts";
import { DynamoUploadStore } from "../../functions/adapters/aws/dynamo-uploads.ts";
import { SqliteUploadStore } from "../../functions/adapters/embedded/sqlite-uploads.ts";
import { describeUploadStoreContract } from "./upload-store.contract.ts";

describeUploadStoreContract("SqliteUploadStore", async () => {
  const dir = mkdtempSync(join(tmpdir(), "longrun-uploads-"));
  const store = new SqliteUploadStore(join(dir, "longrun.db"));
  return {
    store,
    cleanup: async () => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describeUploadStoreContract("DynamoUploadStore", async () => {
  const client = new DynamoDBClient({
    endpoint: inject("awsEndpoint"),
    region: "us-east-1",
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  const tableName = `longrun-uploads-${ulid().toLowerCase()}`;
  await createTable(client, tableName);
  return {
    store: new DynamoUploadStore(client, tableName),
    cleanup: async () => {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
      client.destroy();
    },
  };
});
