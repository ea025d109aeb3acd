/**
 * The parts of `npm run bench`. Each benchmark is a section: it measures what it measures
 * against a floor taken in the same run, and returns a markdown block for the report and
 * a JSON value for bench/results.json under its key. Sections run one after another, never
 * side by side, so none of them loads the machine while another measures.
 */

export interface BenchContext {
  /** Endpoint of the moto server the run started (AWS sections use it; it is shared). */
  motoEndpoint: string;
  /** `--quick`: smaller sizes, for the smoke test and a fast look; the figures are noisier. */
  quick: boolean;
  /** Progress lines for the person waiting (stderr; the report goes to stdout). */
  log: (line: string) => void;
}

export interface BenchResult {
  markdown: string;
  json: unknown;
  /** One row for the summary table at the top of the report. */
  summary: SummaryRow[];
}

export interface SummaryRow {
  measure: string;
  /** The measured figure, with its unit. */
  value: string;
  /** The floor it is compared with, with its unit ("" when the figure is a count). */
  floor: string;
  /** measured / floor, or "" when there is no floor. */
  ratio: string;
}

export interface BenchSection {
  /** Key in results.json and name for `--only`. */
  key: string;
  title: string;
  run(ctx: BenchContext): Promise<BenchResult>;
}
