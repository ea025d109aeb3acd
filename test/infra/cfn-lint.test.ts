/**
 * The real `cdk synth` (cdk.json's app, bundling with the local esbuild, no Docker, no AWS
 * credentials), then cfn-lint over every template it wrote. Warnings cfn-lint raises about
 * CDK-generated redundancies are ignored by id; any error fails.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LAMBDA_CONFIG_PATH } from "../../infra/constructs/functions.ts";
import { PROJECT_ROOT } from "./helpers.ts";

const run = promisify(execFile);

/**
 * cfn-lint findings accepted, with why:
 * - W3005: CDK adds an explicit DependsOn on a role that a GetAtt already implies (harmless).
 */
const IGNORED_CFN_LINT_CHECKS = ["W3005"] as const;

/** Exit-code bits cfn-lint sets for what it found: error 2, warning 4, informational 8. */
const FINDING_BITS = 2 | 4 | 8;

interface Finding {
  Level: string;
  Rule: { Id: string };
  Message: string;
}

/**
 * cfn-lint's findings on one template. Throws when the linter did not run to the end (not
 * installed, crashed, refused its arguments) or printed no JSON list: an empty output is
 * never read as "no findings".
 */
async function cfnLint(template: string): Promise<Finding[]> {
  const args = ["--format", "json", "--ignore-checks", ...IGNORED_CFN_LINT_CHECKS, "--", template];
  const { stdout, code } = await run("cfn-lint", args, { timeout: 120_000 }).then(
    (r) => ({ stdout: r.stdout, code: 0 }),
    (error: { stdout?: string; stderr?: string; code?: number | string; message?: string }) => {
      // Non-zero with only finding bits set is a normal run that found something.
      if (typeof error.code !== "number" || (error.code & ~FINDING_BITS) !== 0) {
        throw new Error(
          `cfn-lint did not run on ${template} (exit ${String(error.code)}): ${error.stderr || error.message}`,
        );
      }
      return { stdout: error.stdout ?? "", code: error.code };
    },
  );
  let findings: unknown;
  try {
    findings = JSON.parse(stdout);
  } catch {
    findings = undefined;
  }
  if (!Array.isArray(findings) || (code !== 0 && findings.length === 0)) {
    throw new Error(`cfn-lint exited ${code} on ${template} with output ${JSON.stringify(stdout)}`);
  }
  return findings as Finding[];
}

let outDir: string;
let templates: string[];

beforeAll(async () => {
  outDir = mkdtempSync(join(tmpdir(), "longrun-synth-"));
  // Environment-agnostic, as on a machine without credentials.
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.CDK_DEFAULT_ACCOUNT;
  delete env.CDK_DEFAULT_REGION;
  await run(
    "npx",
    ["cdk", "synth", "--quiet", "--no-notices", "--no-version-reporting", "-o", outDir],
    {
      cwd: PROJECT_ROOT,
      env,
      timeout: 180_000,
    },
  );
  templates = readdirSync(outDir).filter((f) => f.endsWith(".template.json"));
}, 200_000);

afterAll(() => {
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

describe("cdk synth", () => {
  it("writes the stack template without Docker or credentials", () => {
    expect(templates).toContain("Longrun.template.json");
  });

  it("bundles each handler with the config file inside", () => {
    const manifest = JSON.parse(readFileSync(join(outDir, "Longrun.assets.json"), "utf8")) as {
      files: Record<string, { source: { path: string; packaging?: string } }>;
    };
    const bundles = Object.values(manifest.files).filter((f) => f.source.packaging === "zip");
    expect(bundles.length).toBeGreaterThanOrEqual(4);
    const withConfig = bundles.filter((b) =>
      existsSync(join(outDir, b.source.path, LAMBDA_CONFIG_PATH.split("/").pop() as string)),
    );
    expect(withConfig.length).toBeGreaterThanOrEqual(4);
  });
});

describe("cfn-lint", () => {
  it("runs: it finds the error in a known-bad template", async () => {
    const bad = join(outDir, "known-bad.json");
    writeFileSync(
      bad,
      JSON.stringify({
        AWSTemplateFormatVersion: "2010-09-09",
        Resources: { Q: { Type: "AWS::SQS::Queue", Properties: { NoSuchProperty: 1 } } },
      }),
    );
    const findings = await cfnLint(bad);
    expect(findings.map((f) => `${f.Level} ${f.Rule.Id}`)).toContain("Error E3002");
  });

  it("reports no error on any synthesized template", async () => {
    expect(templates).toContain("Longrun.template.json");
    for (const template of templates) {
      const errors = (await cfnLint(join(outDir, template))).filter((f) => f.Level === "Error");
      expect(
        errors.map((e) => `${e.Rule.Id} ${e.Message}`),
        template,
      ).toEqual([]);
    }
  });
});
