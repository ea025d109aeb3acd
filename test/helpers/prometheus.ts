import parsePrometheusTextFormat, { type PromFamily } from "parse-prometheus-text-format";

/** A parsed exposition with lookups by family name and labels. */
export interface Scrape {
  /** Every family as the parser read it (name, help, type). */
  families: Map<string, PromFamily>;
  /** The value of a counter or gauge sample whose labels include `labels`; undefined if none. */
  value(name: string, labels: Record<string, string>): number | undefined;
  /** A labelled histogram's count, sum and buckets (by `le`) for `labels`. */
  histogram(
    name: string,
    labels: Record<string, string>,
  ): { count: number; sum: number; buckets: Record<string, number> } | undefined;
}

function matches(sample: { labels?: Record<string, string> }, labels: Record<string, string>) {
  return Object.entries(labels).every(([k, v]) => sample.labels?.[k] === v);
}

/**
 * Parses Prometheus text with a real parser (never regexes). The parser folds a histogram
 * into one sample and keeps no labels for it (it follows prom2json, which only does that for
 * unlabelled ones), so a second parse reads histogram families declared untyped: their
 * `_bucket`, `_sum` and `_count` series are then plain labelled samples.
 */
export function parseScrape(exposition: string): Scrape {
  // The parser drops the sample on the text's last line unless a line break ends it.
  const text = exposition.endsWith("\n") ? exposition : `${exposition}\n`;
  const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  const histograms = [...families.values()].filter((f) => f.type === "HISTOGRAM");
  const untypedText = text
    .split("\n")
    .map((line) =>
      histograms.some((f) => line === `# TYPE ${f.name} histogram`)
        ? line.replace(/ histogram$/, " untyped")
        : line,
    )
    .join("\n");
  // Untyped, one histogram's series interleave per label set; the parser starts a new
  // family at each change of name, so families of one name are merged.
  const series = new Map<string, PromFamily>();
  for (const f of parsePrometheusTextFormat(untypedText)) {
    const seen = series.get(f.name);
    if (seen) seen.metrics.push(...f.metrics);
    else series.set(f.name, f);
  }
  const valueIn = (from: Map<string, PromFamily>, name: string, labels: Record<string, string>) => {
    const s = from.get(name)?.metrics.find((m) => matches(m, labels));
    return s?.value === undefined ? undefined : Number(s.value);
  };
  return {
    families,
    value: (name, labels) => valueIn(families, name, labels),
    histogram(name, labels) {
      if (families.get(name)?.type !== "HISTOGRAM") return undefined;
      const count = valueIn(series, `${name}_count`, labels);
      const sum = valueIn(series, `${name}_sum`, labels);
      if (count === undefined || sum === undefined) return undefined;
      const buckets: Record<string, number> = {};
      for (const s of series.get(`${name}_bucket`)?.metrics ?? []) {
        const le = s.labels?.le;
        if (le !== undefined && matches(s, labels)) buckets[le] = Number(s.value);
      }
      return { count, sum, buckets };
    },
  };
}
