/**
 * Report of bench item 5: AWS calls and DynamoDB capacity per request lifecycle, measured
 * through the real handlers on moto (lifecycle.ts), priced at on-demand rates (prices.ts).
 */
import {
  FLOORS,
  type LifecycleUsage,
  measureLifecycles,
  PHASES,
  PLATFORM,
  totalFloor,
  totalOf,
} from "./lifecycle.ts";
import type { PhaseUsage } from "./meter.ts";
import { cost, PRICES, PRICES_LOOKED_UP, S3_FREE, S3_PUT_CLASS } from "./prices.ts";
import type { BenchSection } from "./section.ts";

interface Stat {
  mean: number;
  min: number;
  max: number;
}

function stat(values: number[]): Stat {
  return {
    mean: values.reduce((a, b) => a + b, 0) / values.length,
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

const sum = (m: Record<string, number>) => Object.values(m).reduce((a, b) => a + b, 0);
const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(2));
const range = (s: Stat) => (s.min === s.max ? fmt(s.min) : `${fmt(s.min)}–${fmt(s.max)}`);
const ratio = (measured: number, floor: number) =>
  floor === 0 ? (measured === 0 ? "1.00" : "∞") : (measured / floor).toFixed(2);

/** Per-operation and whole-phase statistics of one phase (or the total) over the runs. */
function summarize(usages: PhaseUsage[], floor: Record<string, number>) {
  const ops = [...new Set([...usages.flatMap((u) => Object.keys(u.calls)), ...Object.keys(floor)])];
  ops.sort();
  const operations: Record<string, Stat & { floor: number; retries: number }> = {};
  for (const op of ops) {
    operations[op] = {
      ...stat(usages.map((u) => u.calls[op] ?? 0)),
      floor: floor[op] ?? 0,
      retries: stat(usages.map((u) => (u.calls[op] ?? 0) - (u.sends[op] ?? 0))).max,
    };
  }
  return {
    calls: stat(usages.map((u) => sum(u.calls))),
    floor: sum(floor),
    operations,
    readUnits: stat(usages.map((u) => u.computed.read)),
    writeUnits: stat(usages.map((u) => u.computed.write)),
    motoReported: {
      readUnits: stat(usages.map((u) => u.reported.read)),
      writeUnits: stat(usages.map((u) => u.reported.write)),
      complete: usages.every((u) => u.reportedComplete),
    },
  };
}

type Summary = ReturnType<typeof summarize>;

function byService(s: Summary): string {
  return Object.entries(s.operations)
    .filter(([, o]) => o.mean > 0 || o.floor > 0)
    .map(([op, o]) => `${op} ${fmt(o.mean)}/${o.floor}`)
    .join(", ");
}

/** Cost per million lifecycles from the mean total, plus the platform's share. */
function price(total: Summary) {
  const mean = (op: string) => total.operations[op]?.mean ?? 0;
  const ops = Object.keys(total.operations);
  const s3Put = ops
    .filter((o) => o.startsWith("S3 ") && S3_PUT_CLASS.has(o.slice(3)))
    .reduce((n, o) => n + mean(o), 0);
  const s3Get = ops
    .filter((o) => o.startsWith("S3 ") && !S3_PUT_CLASS.has(o.slice(3)) && !S3_FREE.has(o.slice(3)))
    .reduce((n, o) => n + mean(o), 0);
  // Every SQS call the handlers make goes to the FIFO dispatch queue.
  const sqsFifo = ops.filter((o) => o.startsWith("SQS ")).reduce((n, o) => n + mean(o), 0);
  const batch = ops.filter((o) => o.startsWith("Batch ")).reduce((n, o) => n + mean(o), 0);
  const M = 1_000_000;
  const measured = [
    {
      item: "DynamoDB write request units",
      perLifecycle: total.writeUnits.mean,
      usd: cost(PRICES.dynamoWriteRequestUnit, total.writeUnits.mean * M),
    },
    {
      item: "DynamoDB read request units",
      perLifecycle: total.readUnits.mean,
      usd: cost(PRICES.dynamoReadRequestUnit, total.readUnits.mean * M),
    },
    {
      item: "SQS FIFO requests (handlers)",
      perLifecycle: sqsFifo,
      usd: cost(PRICES.sqsFifoRequest, sqsFifo * M),
    },
    {
      item: "S3 PUT/LIST requests",
      perLifecycle: s3Put,
      usd: cost(PRICES.s3PutClassRequest, s3Put * M),
    },
    {
      item: "S3 GET requests",
      perLifecycle: s3Get,
      usd: cost(PRICES.s3GetClassRequest, s3Get * M),
    },
    {
      item: "Batch API requests",
      perLifecycle: batch,
      usd: cost(PRICES.batchApiRequest, batch * M),
    },
  ];
  // Made by AWS for longrun, not by its code, so not measured: derived from the lifecycle's
  // messages. The event source mapping receives and deletes each message (one request each
  // at batch size 1; idle long polling excluded); EventBridge's delivery to the events queue
  // is one SendMessage; Batch state-change events on the default bus are free.
  const fifoPlatform = PLATFORM.dispatchMessagesConsumed * 2;
  const standardPlatform = PLATFORM.eventMessages * 3;
  const platform = [
    {
      item: "SQS FIFO receive + delete (event source mapping)",
      perLifecycle: fifoPlatform,
      usd: cost(PRICES.sqsFifoRequest, fifoPlatform * M),
    },
    {
      item: "SQS standard send + receive + delete (Batch events)",
      perLifecycle: standardPlatform,
      usd: cost(PRICES.sqsStandardRequest, standardPlatform * M),
    },
    {
      item: "Lambda requests (duration excluded)",
      perLifecycle: PLATFORM.lambdaInvocations,
      usd: cost(PRICES.lambdaRequest, PLATFORM.lambdaInvocations * M),
    },
    {
      item: "API Gateway HTTP API requests",
      perLifecycle: PLATFORM.httpApiRequests,
      usd: cost(PRICES.httpApiRequest, PLATFORM.httpApiRequests * M),
    },
  ];
  const measuredUsd = measured.reduce((n, r) => n + r.usd, 0);
  const platformUsd = platform.reduce((n, r) => n + r.usd, 0);
  return { measured, measuredUsd, platform, platformUsd, totalUsd: measuredUsd + platformUsd };
}

function lifecycleReport(runs: LifecycleUsage[]) {
  const phases = Object.fromEntries(
    PHASES.map((p) => [
      p,
      summarize(
        runs.map((r) => r[p]),
        FLOORS[p],
      ),
    ]),
  );
  const total = summarize(runs.map(totalOf), totalFloor());
  const pricing = price(total);
  const lines: string[] = [];
  lines.push(`## AWS calls and DynamoDB capacity per request lifecycle (N=${runs.length}, moto)`);
  lines.push("");
  lines.push(
    "Calls are HTTP requests (SDK retries included) counted by SDK middleware; floor = the fewest calls the design needs (bench/lifecycle.ts). RRU/WRU are computed from item sizes by DynamoDB's documented rules (bench/capacity.ts): moto returns fixed placeholder capacity.",
  );
  lines.push("");
  lines.push(
    "| phase | calls (mean) | min–max | floor | ratio | RRU | WRU | by operation (measured/floor) |",
  );
  lines.push("|---|---:|---:|---:|---:|---:|---:|---|");
  for (const p of PHASES) {
    const s = phases[p] as Summary;
    lines.push(
      `| ${p} | ${fmt(s.calls.mean)} | ${range(s.calls)} | ${s.floor} | ${ratio(s.calls.mean, s.floor)} | ${fmt(s.readUnits.mean)} | ${fmt(s.writeUnits.mean)} | ${byService(s)} |`,
    );
  }
  lines.push(
    `| **total** | **${fmt(total.calls.mean)}** | ${range(total.calls)} | **${total.floor}** | **${ratio(total.calls.mean, total.floor)}** | **${fmt(total.readUnits.mean)}** | **${fmt(total.writeUnits.mean)}** | |`,
  );
  lines.push("");
  lines.push("| operation (whole lifecycle) | mean | min–max | floor | ratio | retries (max) |");
  lines.push("|---|---:|---:|---:|---:|---:|");
  for (const [op, o] of Object.entries(total.operations)) {
    lines.push(
      `| ${op} | ${fmt(o.mean)} | ${range(o)} | ${o.floor} | ${ratio(o.mean, o.floor)} | ${o.retries} |`,
    );
  }
  lines.push("");
  lines.push(
    `moto-reported ConsumedCapacity for comparison (not used): ${fmt(total.motoReported.readUnits.mean)} read, ${fmt(total.motoReported.writeUnits.mean)} write per lifecycle.`,
  );
  lines.push("");
  lines.push(
    `### Cost per million lifecycles (us-east-1 on-demand, prices looked up ${PRICES_LOOKED_UP})`,
  );
  lines.push("");
  lines.push("| item | per lifecycle | USD per million lifecycles |");
  lines.push("|---|---:|---:|");
  for (const r of pricing.measured) {
    lines.push(`| ${r.item} | ${fmt(r.perLifecycle)} | ${r.usd.toFixed(3)} |`);
  }
  lines.push(`| **measured calls** | | **${pricing.measuredUsd.toFixed(3)}** |`);
  for (const r of pricing.platform) {
    lines.push(
      `| ${r.item} (derived, not measured) | ${fmt(r.perLifecycle)} | ${r.usd.toFixed(3)} |`,
    );
  }
  lines.push(`| **with platform requests** | | **${pricing.totalUsd.toFixed(3)}** |`);
  lines.push("");
  const approximate = Object.values(PRICES).filter((p) => p.status === "approximate");
  lines.push(
    `Prices marked approximate (list price as of 2025, not confirmed on ${PRICES_LOOKED_UP}): ${approximate.map((p) => p.unit).join("; ")}. Compute (Batch instances, Lambda duration) and storage are not included.`,
  );
  return {
    markdown: lines.join("\n"),
    json: {
      lifecycles: runs.length,
      endpoint: "moto (in-process emulator)",
      capacitySource:
        "computed from item sizes by DynamoDB's documented rules (moto returns fixed placeholders)",
      phases,
      total,
      pricing: { looked_up: PRICES_LOOKED_UP, prices: PRICES, ...pricing },
    },
  };
}

export const lifecycleSection: BenchSection = {
  key: "awsLifecycle",
  title: "AWS control-plane cost per request lifecycle",
  async run(ctx) {
    const n = ctx.quick ? 3 : 20;
    ctx.log(`aws lifecycle: ${n} lifecycles through the handlers on moto`);
    const report = lifecycleReport(await measureLifecycles(ctx.motoEndpoint, n));
    const total = report.json.total;
    return {
      markdown: report.markdown,
      json: report.json,
      summary: [
        {
          measure: "AWS API calls per request lifecycle",
          value: fmt(total.calls.mean),
          floor: String(total.floor),
          ratio: ratio(total.calls.mean, total.floor),
        },
        {
          measure: "USD per million lifecycles (calls longrun makes + platform requests)",
          value: `$${report.json.pricing.totalUsd.toFixed(2)}`,
          floor: "",
          ratio: "",
        },
      ],
    };
  },
};
