/**
 * `npm run chaos`: the seeded chaos run (chaos/engine.ts) on the embedded server and on the
 * AWS backend (on a moto server it starts itself), then a table of its figures. Exits 1 if
 * any invariant was violated, 2 on a usage error.
 *
 *     npm run chaos                                   # both backends, 60 s each, a random seed
 *     npm run chaos -- --seed 7 --duration 30         # the same choices again, 30 s each
 *     npm run chaos -- --backend embedded --seeds 1,2,3
 */
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type MotoProcess, startMotoServer } from "../test/helpers/moto-process.ts";
import { type ChaosBackend, type ChaosReport, runChaos } from "./engine.ts";

const USAGE =
  "usage: npm run chaos [-- --seed N | --seeds N,M,...] [--duration SECONDS] [--backend embedded|aws|both]";

function usage(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  if (i < 0) return undefined;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith("--")) usage(`${name} needs a value`);
  return v;
}

function intArg(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0)
    usage(`${name} must be a non-negative integer, got ${text}`);
  return n;
}

function parseArgs(): { seeds: number[]; durationMs: number; backends: ChaosBackend[] } {
  const known = new Set(["--seed", "--seeds", "--duration", "--backend", "--help", "-h"]);
  for (const a of process.argv.slice(2)) {
    if (a.startsWith("-") && !known.has(a)) usage(`unknown option ${a}`);
  }
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const seedList = argValue("--seeds") ?? argValue("--seed");
  const seeds = seedList
    ? seedList.split(",").map((s) => intArg(s.trim(), "--seed"))
    : [Math.floor(Math.random() * 2 ** 31)];
  const durationMs = 1000 * intArg(argValue("--duration") ?? "60", "--duration");
  const backend = argValue("--backend") ?? "both";
  if (!["embedded", "aws", "both"].includes(backend)) usage(`unknown backend ${backend}`);
  const backends: ChaosBackend[] =
    backend === "both" ? ["embedded", "aws"] : [backend as ChaosBackend];
  return { seeds, durationMs, backends };
}

function fmtCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort(([a], [b]) => a.localeCompare(b));
  return entries.length === 0 ? "-" : entries.map(([k, v]) => `${k} ${v}`).join(", ");
}

/** A markdown table, one column per run. */
function table(reports: ChaosReport[]): string {
  const rows: [string, (r: ChaosReport) => string | number][] = [
    ["backend", (r) => r.backend],
    ["seed", (r) => r.seed],
    ["chaos phase (s)", (r) => (r.durationMs / 1000).toFixed(0)],
    ["wall time (s)", (r) => (r.wallMs / 1000).toFixed(1)],
    ["requests", (r) => r.requests],
    ["submit calls answered", (r) => r.submits],
    ["idempotent replays (200)", (r) => r.replays],
    ["concurrent duplicate submits", (r) => r.concurrentDuplicates],
    ["idempotency conflicts (409)", (r) => r.conflicts],
    ["cancels answered", (r) => r.cancels],
    ["server SIGKILLs", (r) => r.serverKills],
    ["server SIGTERMs", (r) => r.sigtermStops],
    ["job launcher SIGKILLs (embedded)", (r) => r.launcherKills],
    ["restarts", (r) => r.restarts],
    ["orphan jobs at SIGKILL", (r) => r.orphansAtKill],
    ["calls without an answer", (r) => r.unanswered],
    ["requests found after a lost answer", (r) => r.adopted],
    ["API samples", (r) => r.samples],
    ["/proc scans", (r) => r.processScans],
    ["counter checks", (r) => r.counterChecks],
    ["max live jobs / maxRunning", (r) => `${r.maxLiveJobs} / ${r.maxRunning}`],
    ["drain (s)", (r) => (r.drainMs / 1000).toFixed(1)],
    ["violations", (r) => r.violations.length],
  ];
  const head = `| figure | ${reports.map((r) => `${r.backend} #${r.seed}`).join(" | ")} |`;
  const sep = `|---|${reports.map(() => "---:").join("|")}|`;
  const body = rows.map(([name, f]) => `| ${name} | ${reports.map((r) => f(r)).join(" | ")} |`);
  return [head, sep, ...body].join("\n");
}

async function main(): Promise<void> {
  const { seeds, durationMs, backends } = parseArgs();
  const started = Date.now();
  const log = (line: string) =>
    process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0)}s] ${line}\n`);
  let moto: MotoProcess | undefined;
  const reports: ChaosReport[] = [];
  try {
    if (backends.includes("aws")) {
      moto = await startMotoServer();
      log(`moto server at ${moto.endpoint}`);
    }
    for (const seed of seeds) {
      for (const backend of backends) {
        const report = await runChaos({
          backend,
          seed,
          durationMs,
          ...(backend === "aws" && moto ? { awsEndpoint: moto.endpoint } : {}),
          log,
        });
        reports.push(report);
        if (report.violations.length > 0) {
          const file = join(tmpdir(), `longrun-chaos-${backend}-${seed}-${Date.now()}.log`);
          writeFileSync(file, `${report.timeline.join("\n")}\n`);
          log(
            `${backend} seed ${seed}: ${report.violations.length} violation(s); timeline in ${file}`,
          );
        }
      }
    }
  } finally {
    await moto?.stop();
  }
  const out: string[] = [
    "",
    `# longrun chaos run (node ${process.version})`,
    "",
    table(reports),
    "",
  ];
  for (const r of reports) {
    out.push(`## ${r.backend}, seed ${r.seed}`, "");
    out.push(`- faults: ${fmtCounts(r.faults)}`);
    out.push(`- final statuses: ${fmtCounts(r.finalStatuses)}`);
    out.push(`- HTTP statuses: ${fmtCounts(r.httpStatuses)}`);
    if (r.serverLogNotes.length > 0) {
      out.push(`- server log lines mentioning failures (${r.serverLogNotes.length} kinds):`);
      for (const n of r.serverLogNotes.slice(0, 10)) out.push(`  - \`${n}\``);
    }
    out.push(`- violations: ${r.violations.length}`);
    for (const v of r.violations) out.push(`  - ${v}`);
    out.push("");
  }
  process.stdout.write(`${out.join("\n")}\n`);
  const failed = reports.some((r) => r.violations.length > 0);
  process.exit(failed ? 1 : 0);
}

main().catch((error: unknown) => {
  process.stderr.write(`chaos: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
