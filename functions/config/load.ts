import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve } from "node:path";
import type { z } from "zod";
import { type LongrunConfig, LongrunConfigSchema, type QueueConfig } from "./schema.ts";

export class ConfigError extends Error {
  override name = "ConfigError";
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join(".");
  return `${path || "<root>"}: ${issue.message}`;
}

/**
 * Validates a parsed config object. A relative path in `command` (an element holding a
 * slash that does not start with one) is resolved against `baseDir`.
 * @throws ConfigError naming the offending field.
 */
export function parseConfig(raw: unknown, baseDir: string, source = "<inline>"): LongrunConfig {
  const parsed = LongrunConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new ConfigError(
      `invalid config ${source}: ${parsed.error.issues.map(describeIssue).join("; ")}`,
    );
  }
  const queues: Record<string, QueueConfig> = {};
  for (const [name, q] of Object.entries(parsed.data.queues)) {
    queues[name] = {
      ...q,
      name,
      command: q.command.map((part) =>
        part.includes("/") && !isAbsolute(part) && !part.startsWith("-")
          ? resolve(baseDir, part)
          : part,
      ),
    };
  }
  return { source, queues };
}

/** Reads and validates a config file. */
export function loadConfigFile(path: string): LongrunConfig {
  const abs = resolve(path);
  let text: string;
  try {
    text = readFileSync(abs, "utf8");
  } catch (cause) {
    throw new ConfigError(`cannot read config ${abs}: ${(cause as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new ConfigError(`config ${abs} is not valid JSON: ${(cause as Error).message}`);
  }
  return parseConfig(raw, dirname(abs), abs);
}
