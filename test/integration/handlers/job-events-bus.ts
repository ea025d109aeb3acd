/**
 * The Batch events rule exactly as CDK synthesizes it (infra/constructs/job-events.ts), put
 * on an EventBridge bus of the test's own on the emulator and targeting the harness's events
 * queue: an event put on that bus reaches the queue only if the deployed rule matches it.
 */
import {
  CreateEventBusCommand,
  EventBridgeClient,
  PutRuleCommand,
  PutTargetsCommand,
} from "@aws-sdk/client-eventbridge";
import { GetQueueAttributesCommand } from "@aws-sdk/client-sqs";
import { App, Stack } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import * as sqs from "aws-cdk-lib/aws-sqs";
import { JobEvents } from "../../../infra/constructs/job-events.ts";
import { awsClientConfig } from "../aws.ts";
import type { Harness } from "./harness.ts";

/** The bus (named `<prefix>-<name>`), its client, and every rule the construct synthesized. */
export async function jobEventsBus(
  h: Harness,
  name: string,
): Promise<{
  eb: EventBridgeClient;
  bus: string;
  rules: Record<string, unknown>[];
}> {
  const stack = new Stack(new App(), "Events");
  new JobEvents(stack, "JobEvents", {
    jobQueueArns: [h.jobQueueArn],
    queue: new sqs.Queue(stack, "Queue"),
    deadLetterQueue: new sqs.Queue(stack, "Dlq"),
  });
  const rules = Object.values(Template.fromStack(stack).findResources("AWS::Events::Rule"));
  const eb = new EventBridgeClient(awsClientConfig());
  const bus = `${h.prefix}-${name}`;
  const rule = `${h.prefix}-${name}-rule`;
  await eb.send(new CreateEventBusCommand({ Name: bus }));
  await eb.send(
    new PutRuleCommand({
      Name: rule,
      EventBusName: bus,
      EventPattern: JSON.stringify(rules[0]?.Properties.EventPattern),
    }),
  );
  const attrs = await h.clients.sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: h.queues.eventsQueueUrl,
      AttributeNames: ["QueueArn"],
    }),
  );
  await eb.send(
    new PutTargetsCommand({
      Rule: rule,
      EventBusName: bus,
      Targets: [{ Id: "events-queue", Arn: attrs.Attributes?.QueueArn }],
    }),
  );
  return { eb, bus, rules };
}
