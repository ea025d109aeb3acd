/**
 * The CDK app: `npx cdk synth` / `npx cdk deploy` (cdk.json runs this file with tsx).
 * Reads the same longrun.config.json as the embedded server and the Lambda handlers, takes
 * deployment settings from `longrun:*` context, and runs cdk-nag's AWS Solutions checks on
 * every synth: an unacknowledged error fails it.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { App, Validations } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import { loadConfigFile } from "../functions/config/load.ts";
import { readSettings } from "./settings.ts";
import { LongrunStack } from "./stacks/longrun-stack.ts";

/** Repository root, whatever the working directory. */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const app = new App();
const settings = readSettings(app.node);
const config = loadConfigFile(resolve(PROJECT_ROOT, settings.configPath));

new LongrunStack(app, "Longrun", {
  description: "longrun: asynchronous request API for long-running GPU jobs",
  config,
  settings,
  projectRoot: PROJECT_ROOT,
  handlersDir: join(PROJECT_ROOT, "functions", "handlers"),
  // Account and region come from the CLI's credentials at deploy; synth stays env-agnostic.
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});

Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
