import { AwsSolutionsChecks } from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { NAG_REASONS } from "../../infra/nag.ts";
import { buildStack } from "./helpers.ts";

type Report = ReturnType<AwsSolutionsChecks["validateScope"]>;
let report: Report;

beforeAll(() => {
  const { stack } = buildStack();
  report = new AwsSolutionsChecks().validateScope(stack);
});

describe("cdk-nag AwsSolutions", () => {
  it("finds no error that is not acknowledged", () => {
    const errors = report.violations.filter((v) => v.severity === "error");
    expect(
      errors.map(
        (v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(", ")}`,
      ),
    ).toEqual([]);
  });

  it("finds no warning either", () => {
    expect(report.violations.map((v) => v.ruleName)).toEqual([]);
  });

  it("gives every acknowledgement a reason of substance", () => {
    for (const reason of Object.values(NAG_REASONS)) expect(reason.length).toBeGreaterThan(40);
  });
});
