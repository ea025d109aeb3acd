/**
 * The queue chart: queued and running over the window, and the caller's recent waits, as
 * inline SVG (no chart library, nothing fetched). Colours come from the style sheet; each
 * chart carries a text summary for screen readers and for people who prefer numbers.
 */
import type { QueueStatsJson } from "./api.ts";
import { formatSeconds } from "./format.ts";

const W = 600;
const H = 150;
const PAD = { left: 36, right: 8, top: 8, bottom: 20 };

function scaleX(t: number, from: number, to: number): number {
  const span = Math.max(1, to - from);
  return PAD.left + ((t - from) / span) * (W - PAD.left - PAD.right);
}

function scaleY(v: number, max: number): number {
  return PAD.top + (1 - v / Math.max(1, max)) * (H - PAD.top - PAD.bottom);
}

/** A step line: each count holds until the next sample, the last one until now. */
function stepPoints(
  points: { t: number; v: number }[],
  from: number,
  to: number,
  max: number,
): string {
  const out: string[] = [];
  points.forEach((p, i) => {
    const x = scaleX(p.t, from, to).toFixed(1);
    const y = scaleY(p.v, max).toFixed(1);
    if (i > 0) out.push(`${x},${scaleY(points[i - 1]?.v ?? 0, max).toFixed(1)}`);
    out.push(`${x},${y}`);
  });
  const last = points.at(-1);
  if (last) out.push(`${scaleX(to, from, to).toFixed(1)},${scaleY(last.v, max).toFixed(1)}`);
  return out.join(" ");
}

function Axes(props: { from: number; to: number; max: number; unit: string }) {
  const { from, to, max } = props;
  const minutes = Math.round((to - from) / 60_000);
  const bottom = H - PAD.bottom;
  return (
    <g class="axes">
      <line x1={PAD.left} y1={bottom} x2={W - PAD.right} y2={bottom} />
      <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={bottom} />
      <text x={PAD.left - 4} y={PAD.top + 8} text-anchor="end">
        {props.unit === "s" ? formatSeconds(max) : String(max)}
      </text>
      <text x={PAD.left - 4} y={bottom} text-anchor="end">
        0
      </text>
      <text x={PAD.left} y={H - 4}>
        −{minutes} min
      </text>
      <text x={W - PAD.right} y={H - 4} text-anchor="end">
        now
      </text>
    </g>
  );
}

export function QueueChart(props: { stats: QueueStatsJson; now: number }) {
  const from = Date.parse(props.stats.from);
  const to = Math.max(props.now, from + 1);
  const samples = props.stats.samples.map((s) => ({
    t: Date.parse(s.at),
    queued: s.queued,
    running: s.running,
  }));
  const max = Math.max(1, ...samples.map((s) => Math.max(s.queued, s.running)));
  const last = samples.at(-1);
  const peakQueued = Math.max(0, ...samples.map((s) => s.queued));
  const summary = last
    ? `Now ${last.queued} queued and ${last.running} running; at most ${peakQueued} queued over the window (${samples.length} samples).`
    : "No samples yet.";
  const waits = props.stats.waits.map((w) => ({ t: Date.parse(w.at), v: w.seconds }));
  const maxWait = Math.max(1, ...waits.map((w) => w.v));
  const sorted = [...waits].map((w) => w.v).sort((a, b) => a - b);
  const median = sorted.length ? (sorted[Math.floor((sorted.length - 1) / 2)] ?? 0) : 0;
  const waitSummary = waits.length
    ? `${waits.length} of your requests started in the window; median wait ${formatSeconds(median)}, longest ${formatSeconds(sorted.at(-1) ?? 0)}.`
    : "None of your requests started in the window.";
  return (
    <div class="charts">
      <figure>
        <figcaption>Queued and running, last hour</figcaption>
        <svg
          viewBox={`0 0 ${W} ${H}`}
          role="img"
          aria-labelledby="chart-counts-title chart-counts-desc"
          class="chart"
        >
          <title id="chart-counts-title">Queued and running requests, last hour</title>
          <desc id="chart-counts-desc">{summary}</desc>
          <Axes from={from} to={to} max={max} unit="" />
          <polyline
            class="series queued"
            points={stepPoints(
              samples.map((s) => ({ t: s.t, v: s.queued })),
              from,
              to,
              max,
            )}
          />
          <polyline
            class="series running"
            points={stepPoints(
              samples.map((s) => ({ t: s.t, v: s.running })),
              from,
              to,
              max,
            )}
          />
        </svg>
        <ul class="legend">
          <li>
            <span class="swatch queued" aria-hidden="true" /> queued
          </li>
          <li>
            <span class="swatch running" aria-hidden="true" /> running
          </li>
        </ul>
        <p class="summary">{summary}</p>
      </figure>
      <figure>
        <figcaption>Your recent waits (submit to running)</figcaption>
        <svg
          viewBox={`0 0 ${W} ${H}`}
          role="img"
          aria-labelledby="chart-waits-title chart-waits-desc"
          class="chart"
        >
          <title id="chart-waits-title">Wait of each of your requests that started</title>
          <desc id="chart-waits-desc">{waitSummary}</desc>
          <Axes from={from} to={to} max={maxWait} unit="s" />
          {waits.map((w) => (
            <circle
              key={`${w.t}-${w.v}`}
              class="wait"
              cx={scaleX(w.t, from, to).toFixed(1)}
              cy={scaleY(w.v, maxWait).toFixed(1)}
              r="3.5"
            />
          ))}
        </svg>
        <p class="summary">{waitSummary}</p>
      </figure>
    </div>
  );
}
