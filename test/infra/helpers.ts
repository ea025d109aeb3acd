/**
 * Builds the longrun stack the way infra/app.ts does (cdk.json feature flags, the repo's
 * longrun.config.json), minus Lambda bundling: assertions look at the template, and
 * skipping esbuild keeps each test file to one fast synthesis.
 */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { App, type AppProps } from "aws-cdk-lib";
import { loadConfigFile } from "../../functions/config/load.ts";
import type { LongrunConfig } from "../../functions/config/schema.ts";
import { readSettings } from "../../infra/settings.ts";
import { LongrunStack } from "../../infra/stacks/longrun-stack.ts";

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** The feature flags of cdk.json, so tests synthesize what `cdk synth` does. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(readFileSync(join(PROJECT_ROOT, "cdk.json"), "utf8")) as {
    context?: Record<string, unknown>;
  };
  return cdkJson.context ?? {};
}

export interface BuiltStack {
  app: App;
  stack: LongrunStack;
  config: LongrunConfig;
}

/**
 * A LongrunStack from the repository's config, with extra `longrun:*` context (and App
 * props, e.g. an `outdir`; context `"aws:cdk:bundling-stacks": ["**"]` bundles the Lambdas).
 */
export function buildStack(
  context: Record<string, unknown> = {},
  appProps: Omit<AppProps, "context"> = {},
): BuiltStack {
  const app = new App({
    ...appProps,
    context: {
      ...cdkJsonContext(),
      // No stack is bundled: NodejsFunction then stages no esbuild output.
      "aws:cdk:bundling-stacks": [],
      ...context,
    },
  });
  const settings = readSettings(app.node, {});
  const config = loadConfigFile(join(PROJECT_ROOT, settings.configPath));
  const stack = new LongrunStack(app, "Longrun", {
    config,
    settings,
    projectRoot: PROJECT_ROOT,
    handlersDir: join(PROJECT_ROOT, "functions", "handlers"),
  });
  return { app, stack, config };
}

/** A policy statement as it appears in the template. */
export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
}

export function asArray<T>(value: T | T[]): T[] {
  return Array.isArray(value) ? value : [value];
}
