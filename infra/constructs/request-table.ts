import { RemovalPolicy } from "aws-cdk-lib";
import * as dynamodb from "aws-cdk-lib/aws-dynamodb";
import * as iam from "aws-cdk-lib/aws-iam";
import { Construct } from "constructs";
import {
  INDEXES,
  TABLE_KEY,
  TABLE_STREAM_VIEW,
  TTL_ATTRIBUTE,
} from "../../functions/adapters/aws/definitions.ts";
import { ITEM_KIND } from "../../functions/adapters/aws/items.ts";

/** Props of {@link RequestTable}. */
export interface RequestTableProps {
  /** Refuse DeleteTable (on by default: the table is the system of record). */
  readonly deletionProtection?: boolean;
  /** What happens to the table when the stack is deleted; RETAIN by default. */
  readonly removalPolicy?: RemovalPolicy;
}

/**
 * The single DynamoDB table of requests, idempotency keys and queue counters, built from
 * `functions/adapters/aws/definitions.ts` (the same module the runtime bootstrap uses), so
 * keys and index names are never written twice.
 */
export class RequestTable extends Construct {
  /** The table; prefer the grant methods over using it directly. */
  readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: RequestTableProps = {}) {
    super(scope, id);
    const stringKey = (name: string): dynamodb.Attribute => ({
      name,
      type: dynamodb.AttributeType.STRING,
    });
    // A single-region AWS::DynamoDB::Table (not TableV2's GlobalTable): what emulators such
    // as moto and LocalStack deploy too, and all a single-region service needs.
    this.table = new dynamodb.Table(this, "Table", {
      partitionKey: stringKey(TABLE_KEY.partitionKey),
      sortKey: stringKey(TABLE_KEY.sortKey),
      // Traffic follows bursty submissions and idles between them: on-demand costs nothing idle.
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      timeToLiveAttribute: TTL_ATTRIBUTE,
      deletionProtection: props.deletionProtection ?? true,
      removalPolicy: props.removalPolicy ?? RemovalPolicy.RETAIN,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      // Webhook deliveries are derived from each committed write's old and new images.
      stream: dynamodb.StreamViewType[TABLE_STREAM_VIEW],
    });
    for (const index of Object.values(INDEXES)) {
      this.table.addGlobalSecondaryIndex({
        indexName: index.name,
        partitionKey: stringKey(index.partitionKey),
        sortKey: stringKey(index.sortKey),
        projectionType:
          index.projection === "ALL"
            ? dynamodb.ProjectionType.ALL
            : dynamodb.ProjectionType.KEYS_ONLY,
      });
    }
  }

  /** Table name, for the handlers' environment. */
  get tableName(): string {
    return this.table.tableName;
  }

  /**
   * Get, Put and Update of webhook order records only (`pk` starting `WHORD#`): what the
   * webhooks handler needs to keep each request's deliveries in order.
   */
  grantWebhookOrder(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
      resourceArns: [this.table.tableArn],
      conditions: leadingKeys(`${ITEM_KIND.webhookOrder.pkPrefix}*`),
    });
  }

  /**
   * GetItem and PutItem on webhook-secret items only (`pk` starting `WHSEC#`): what the
   * webhooks handler needs for tenants' secrets. No request item, no index, no other action.
   */
  grantWebhookSecrets(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ["dynamodb:GetItem", "dynamodb:PutItem"],
      resourceArns: [this.table.tableArn],
      conditions: leadingKeys(`${ITEM_KIND.webhookSecret.pkPrefix}*`),
    });
  }

  /** Item reads, writes and transactions on the table and its indexes (the handlers). */
  grantReadWriteData(grantee: iam.IGrantable): iam.Grant {
    return this.table.grantReadWriteData(grantee);
  }
}

/**
 * A condition that every partition key the call touches matches `pattern`. ForAllValues
 * alone would also hold for a call naming no key (a Scan): the actions granted with it are
 * all single-item ones, which always name their key.
 */
export function leadingKeys(pattern: string): Record<string, Record<string, string[]>> {
  return { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": [pattern] } };
}
