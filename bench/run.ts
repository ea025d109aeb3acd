/**
 * `npm run bench`: every benchmark of issue 6, one after another, against floors measured
 * in the same run. Prints a markdown report (summary table first) and writes
 * bench/results.json.
 *
 *     npm run bench                      # everything (a few minutes on 2 cores)
 *     npm run bench -- --quick           # smaller sizes, noisier figures
 *     npm run bench -- --only submit     # one section (keys: see SECTIONS)
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startMotoServer } from "../test/helpers/moto-process.ts";
import type { BenchContext, BenchResult } from "./section.ts";
import { SECTIONS } from "./sections.ts";

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function summaryTable(results: Array<{ title: string; result: BenchResult }>): string {
  const lines = [
    "## Summary",
    "",
    "| measure | measured | floor (same run) | ratio |",
    "|---|---:|---:|---:|",
  ];
  for (const { result } of results) {
    for (const row of result.summary) {
      lines.push(`| ${row.measure} | ${row.value} | ${row.floor} | ${row.ratio} |`);
    }
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const only = argValue("--only")?.split(",");
  const unknown = only?.filter((k) => !SECTIONS.some((s) => s.key === k)) ?? [];
  if (unknown.length > 0) {
    throw new Error(
      `unknown section ${unknown.join(", ")}; sections: ${SECTIONS.map((s) => s.key).join(", ")}`,
    );
  }
  const chosen = SECTIONS.filter((s) => !only || only.includes(s.key));
  const started = Date.now();
  const moto = await startMotoServer();
  const ctx: BenchContext = {
    motoEndpoint: moto.endpoint,
    quick: process.argv.includes("--quick"),
    log: (line) =>
      process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}\n`),
  };
  const results: Array<{ key: string; title: string; result: BenchResult; seconds: number }> = [];
  try {
    for (const section of chosen) {
      const t0 = Date.now();
      ctx.log(`${section.key}: ${section.title}`);
      const result = await section.run(ctx);
      results.push({
        key: section.key,
        title: section.title,
        result,
        seconds: (Date.now() - t0) / 1000,
      });
    }
  } finally {
    await moto.stop();
  }
  const report = [
    `# longrun benchmark (${new Date().toISOString()}, node ${process.version}, ${ctx.quick ? "quick" : "full"} run)`,
    "",
    summaryTable(results),
    ...results.flatMap((r) => ["", r.result.markdown]),
  ].join("\n");
  process.stdout.write(`${report}\n`);
  const out = join(import.meta.dirname, "results.json");
  const json: Record<string, unknown> = {
    generatedAt: new Date().toISOString(),
    node: process.version,
    quick: ctx.quick,
  };
  for (const r of results) json[r.key] = { seconds: r.seconds, ...(r.result.json as object) };
  await writeFile(out, `${JSON.stringify(json, null, 2)}\n`);
  process.stdout.write(`\nwrote ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

await main();
