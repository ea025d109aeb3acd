/** The three views: every queue, one queue with its chart and requests, one request. */
import { useEffect, useRef, useState } from "preact/hooks";
import {
  ApiProblem,
  api,
  type QueueJson,
  type QueueStatsJson,
  RETRYABLE,
  type RequestJson,
  type ResultJson,
  STATUSES,
  TERMINAL,
  type TenantUsage,
} from "./api.ts";
import { QueueChart } from "./chart.tsx";
import { formatBytes, formatSeconds, formatTime, WAIT_REASONS } from "./format.ts";
import { POLL_MS, usePoll } from "./poll.ts";

interface ViewProps {
  token: string;
  onProblem: (p: ApiProblem) => void;
}

const enc = encodeURIComponent;

function ProblemNote(props: { problem: ApiProblem | null; onProblem: (p: ApiProblem) => void }) {
  const { problem, onProblem } = props;
  useEffect(() => {
    if (problem) onProblem(problem);
  }, [problem, onProblem]);
  if (!problem) return null;
  return (
    <p class="problem" role="alert">
      {problem.detail}
    </p>
  );
}

function StatusBadge(props: { status: string }) {
  return <span class={`badge s-${props.status.toLowerCase()}`}>{props.status}</span>;
}

function Usage(props: { label: string; used: number; limit: number }) {
  return (
    <span class="usage">
      {props.used} / {props.limit} {props.label}
    </span>
  );
}

function TenantLine(props: { tenant: TenantUsage | undefined }) {
  const t = props.tenant;
  if (!t) return <span class="muted">—</span>;
  return (
    <>
      <Usage label="queued" used={t.queued} limit={t.maxQueued} />,{" "}
      <Usage label="running" used={t.running} limit={t.maxRunning} />
    </>
  );
}

// ---- all queues -------------------------------------------------------------------------

export function QueuesPage(props: ViewProps) {
  const queues = usePoll(() => api<QueueJson[]>(props.token, "/v1/queues"), [props.token]);
  return (
    <section aria-labelledby="queues-title">
      <h1 id="queues-title">Queues</h1>
      <ProblemNote problem={queues.problem} onProblem={props.onProblem} />
      {queues.data ? (
        <div class="scroll">
          <table>
            <caption class="visually-hidden">Queues with their limits and counts</caption>
            <thead>
              <tr>
                <th scope="col">Queue</th>
                <th scope="col">Queued</th>
                <th scope="col">Running</th>
                <th scope="col">Your usage</th>
              </tr>
            </thead>
            <tbody>
              {queues.data.map((q) => (
                <tr key={q.name}>
                  <th scope="row">
                    <a href={`#/queues/${enc(q.name)}`}>{q.name}</a>
                  </th>
                  <td>
                    <Usage label="" used={q.queued} limit={q.maxQueued} />
                  </td>
                  <td>
                    <Usage label="" used={q.running} limit={q.maxRunning} />
                  </td>
                  <td>
                    <TenantLine tenant={q.tenant} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : queues.problem ? null : (
        <p aria-busy="true">Loading…</p>
      )}
    </section>
  );
}

// ---- one queue --------------------------------------------------------------------------

const PAGE_SIZE = 20;

export function QueuePage(props: ViewProps & { queue: string }) {
  const { token, queue } = props;
  const [status, setStatus] = useState("");
  // Cursors of the pages seen so far: index 0 is the newest page (no cursor).
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const page = cursors.length - 1;
  const cursor = cursors[page];

  const info = usePoll(() => api<QueueJson>(token, `/v1/queues/${enc(queue)}`), [token, queue]);
  const stats = usePoll(
    () => api<QueueStatsJson>(token, `/v1/queues/${enc(queue)}/stats`),
    [token, queue],
  );
  const list = usePoll(() => {
    const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (status) q.set("status", status);
    if (cursor) q.set("cursor", cursor);
    return api<{ items: RequestJson[]; nextCursor: string | null }>(
      token,
      `/v1/queues/${enc(queue)}/requests?${q}`,
    );
  }, [token, queue, status, cursor]);

  const q = info.data;
  return (
    <section aria-labelledby="queue-title">
      <p class="crumbs">
        <a href="#/">Queues</a> /
      </p>
      <h1 id="queue-title">Queue {queue}</h1>
      <ProblemNote problem={info.problem} onProblem={props.onProblem} />
      {q ? (
        <dl class="facts">
          <div>
            <dt>Queued</dt>
            <dd>
              <Usage label="" used={q.queued} limit={q.maxQueued} />
            </dd>
          </div>
          <div>
            <dt>Running</dt>
            <dd>
              <Usage label="" used={q.running} limit={q.maxRunning} />
            </dd>
          </div>
          <div>
            <dt>Your usage</dt>
            <dd>
              <TenantLine tenant={q.tenant} />
            </dd>
          </div>
        </dl>
      ) : null}
      {stats.data ? <QueueChart stats={stats.data} now={Date.now()} /> : null}

      <h2 id="requests-title">Your requests</h2>
      <div class="toolbar">
        <label for="status-filter">Status</label>
        <select
          id="status-filter"
          value={status}
          onChange={(e) => {
            setStatus((e.target as HTMLSelectElement).value);
            setCursors([undefined]);
          }}
        >
          <option value="">All</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </div>
      <ProblemNote problem={list.problem} onProblem={props.onProblem} />
      {list.data ? (
        list.data.items.length === 0 ? (
          <p>No requests{status ? ` in ${status}` : ""} on this page.</p>
        ) : (
          <div class="scroll">
            <table aria-labelledby="requests-title">
              <thead>
                <tr>
                  <th scope="col">Request</th>
                  <th scope="col">Status</th>
                  <th scope="col">Progress</th>
                  <th scope="col">Created</th>
                  <th scope="col">Attempt</th>
                </tr>
              </thead>
              <tbody>
                {list.data.items.map((r) => (
                  <tr key={r.id}>
                    <th scope="row">
                      <a href={`#/requests/${enc(r.id)}`} class="mono">
                        {r.id}
                      </a>
                    </th>
                    <td>
                      <StatusBadge status={r.status} />
                      {r.position !== null ? (
                        <span class="muted"> #{r.position + 1} in line</span>
                      ) : null}
                    </td>
                    <td>{progressText(r)}</td>
                    <td>{formatTime(r.createdAt)}</td>
                    <td>
                      {r.attempt} of {r.maxAttempts}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )
      ) : null}
      <nav class="pager" aria-label="Pages of requests">
        <button
          type="button"
          class="secondary"
          disabled={page === 0}
          onClick={() => setCursors((c) => c.slice(0, -1))}
        >
          Newer
        </button>
        <span>Page {page + 1}</span>
        <button
          type="button"
          class="secondary"
          disabled={!list.data?.nextCursor}
          onClick={() => {
            const next = list.data?.nextCursor;
            if (next) setCursors((c) => [...c, next]);
          }}
        >
          Older
        </button>
      </nav>
    </section>
  );
}

function progressText(r: RequestJson): string {
  const p = r.progress;
  if (!p) return "—";
  const share = p.total ? ` (${Math.round((100 * p.current) / p.total)} %)` : "";
  return `${p.current}${p.total !== null ? ` of ${p.total}` : ""}${share}`;
}

// ---- one request ------------------------------------------------------------------------

export function RequestPage(props: ViewProps & { id: string }) {
  const { token, id } = props;
  const request = usePoll(() => api<RequestJson>(token, `/v1/requests/${enc(id)}`), [token, id]);
  const [outcome, setOutcome] = useState<{ text: string; link?: string } | null>(null);
  const [actionProblem, setActionProblem] = useState<ApiProblem | null>(null);
  const [busy, setBusy] = useState(false);
  const r = request.data;

  // A new request in view starts with a clean slate of outcomes.
  useEffect(() => {
    setOutcome(null);
    setActionProblem(null);
  }, [id]);

  const act = async (action: "cancel" | "retry") => {
    setBusy(true);
    setOutcome(null);
    setActionProblem(null);
    try {
      const answer = await api<RequestJson>(token, `/v1/requests/${enc(id)}/${action}`, {
        method: "POST",
        ...(action === "retry" ? { body: { fromCheckpoint: true } } : {}),
      });
      if (action === "cancel") {
        setOutcome({
          text:
            answer.status === "CANCELLED"
              ? "Cancelled."
              : "Cancel requested: the job was told to stop and the request becomes CANCELLED once it has.",
        });
      } else {
        setOutcome({ text: `Retried as ${answer.id}.`, link: answer.id });
      }
      request.refresh();
    } catch (error) {
      const p = error instanceof ApiProblem ? error : new ApiProblem(0, "client", String(error));
      setActionProblem(p);
      props.onProblem(p);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section aria-labelledby="request-title">
      <p class="crumbs">
        <a href="#/">Queues</a> / {r ? <a href={`#/queues/${enc(r.queue)}`}>{r.queue}</a> : null}
      </p>
      <h1 id="request-title" class="mono">
        {id}
      </h1>
      <ProblemNote problem={request.problem} onProblem={props.onProblem} />
      {r ? (
        <>
          <p class="status-line" aria-live="polite">
            Status <StatusBadge status={r.status} />
            {r.cancelRequested && !TERMINAL.has(r.status) ? (
              <span class="muted"> (cancel requested)</span>
            ) : null}
          </p>
          <ProgressBar request={r} />
          <Waiting request={r} />
          <div class="actions">
            {!TERMINAL.has(r.status) ? (
              <button
                type="button"
                class="danger"
                disabled={busy || r.cancelRequested}
                onClick={() => void act("cancel")}
              >
                Cancel
              </button>
            ) : null}
            {RETRYABLE.has(r.status) ? (
              <button type="button" disabled={busy} onClick={() => void act("retry")}>
                Retry
              </button>
            ) : null}
          </div>
          <div aria-live="polite">
            {outcome ? (
              <p class="outcome" role="status">
                {outcome.link ? (
                  <>
                    Retried as{" "}
                    <a class="mono" href={`#/requests/${enc(outcome.link)}`}>
                      {outcome.link}
                    </a>
                    .
                  </>
                ) : (
                  outcome.text
                )}
              </p>
            ) : null}
          </div>
          {actionProblem ? (
            <p class="problem" role="alert">
              {actionProblem.detail}
            </p>
          ) : null}
          <Details request={r} />
          {r.status === "SUCCEEDED" ? <Result token={token} id={r.id} /> : null}
          <Logs token={token} id={r.id} finished={TERMINAL.has(r.status)} />
        </>
      ) : null}
    </section>
  );
}

function ProgressBar(props: { request: RequestJson }) {
  const p = props.request.progress;
  if (!p) return null;
  const label = `${p.current}${p.total !== null ? ` of ${p.total}` : ""}${p.message ? ` — ${p.message}` : ""}`;
  return (
    <div class="progress">
      <label for="progress">Progress</label>
      {p.total !== null && p.total > 0 ? (
        <progress id="progress" max={p.total} value={Math.min(p.current, p.total)}>
          {label}
        </progress>
      ) : (
        <progress id="progress">{label}</progress>
      )}
      <span class="progress-text">{label}</span>
    </div>
  );
}

function Waiting(props: { request: RequestJson }) {
  const r = props.request;
  const rows: [string, string][] = [];
  if (r.waitReason) {
    rows.push(["Waiting because", WAIT_REASONS[r.waitReason] ?? r.waitReason]);
  }
  if (r.waitDetail) rows.push(["Detail", r.waitDetail]);
  if (r.position !== null) {
    rows.push(["Position", `${r.position} request(s) of the queue start before it`]);
  }
  if (r.estimatedStartAt) rows.push(["Estimated start", formatTime(r.estimatedStartAt)]);
  if (rows.length === 0) return null;
  return (
    <dl class="facts waiting">
      {rows.map(([k, v]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{v}</dd>
        </div>
      ))}
    </dl>
  );
}

function Details(props: { request: RequestJson }) {
  const r = props.request;
  const took =
    r.startedAt && r.finishedAt
      ? formatSeconds((Date.parse(r.finishedAt) - Date.parse(r.startedAt)) / 1000)
      : null;
  return (
    <>
      <h2>Details</h2>
      <dl class="facts">
        <div>
          <dt>Attempt</dt>
          <dd>
            {r.attempt} of {r.maxAttempts}
          </dd>
        </div>
        <div>
          <dt>Priority</dt>
          <dd>{r.priority}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{formatTime(r.createdAt)}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>{formatTime(r.startedAt)}</dd>
        </div>
        <div>
          <dt>Finished</dt>
          <dd>
            {formatTime(r.finishedAt)}
            {took ? ` (${took} after its start)` : ""}
          </dd>
        </div>
        {r.retryOf ? (
          <div>
            <dt>Retry of</dt>
            <dd>
              <a class="mono" href={`#/requests/${enc(r.retryOf)}`}>
                {r.retryOf}
              </a>
            </dd>
          </div>
        ) : null}
        {r.error ? (
          <div>
            <dt>Error</dt>
            <dd>
              <code>{r.error.code}</code>: {r.error.message}
            </dd>
          </div>
        ) : null}
        {Object.keys(r.metadata).length > 0 ? (
          <div>
            <dt>Metadata</dt>
            <dd>
              {Object.entries(r.metadata)
                .map(([k, v]) => `${k}=${v}`)
                .join(", ")}
            </dd>
          </div>
        ) : null}
        {r.files && Object.keys(r.files).length > 0 ? (
          <div>
            <dt>Input files</dt>
            <dd>
              {Object.entries(r.files)
                .map(([k, v]) => `${k} (${formatBytes(v.size)})`)
                .join(", ")}
            </dd>
          </div>
        ) : null}
      </dl>
      {r.input !== undefined ? (
        <details>
          <summary>Input</summary>
          <pre class="json">{JSON.stringify(r.input, null, 2)}</pre>
        </details>
      ) : null}
    </>
  );
}

function Result(props: { token: string; id: string }) {
  const [result, setResult] = useState<ResultJson | null>(null);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  useEffect(() => {
    let live = true;
    api<ResultJson>(props.token, `/v1/requests/${enc(props.id)}/result`).then(
      (r) => live && setResult(r),
      (e: unknown) => live && setProblem(e instanceof ApiProblem ? e : null),
    );
    return () => {
      live = false;
    };
  }, [props.token, props.id]);
  return (
    <section aria-labelledby="result-title">
      <h2 id="result-title">Result</h2>
      {problem ? (
        <p class="problem" role="alert">
          {problem.detail}
        </p>
      ) : null}
      {result ? (
        <>
          <h3>Output</h3>
          <pre class="json" data-testid="output">
            {JSON.stringify(result.output, null, 2)}
          </pre>
          <h3>Artifacts</h3>
          {result.artifacts.length === 0 ? (
            <p>None.</p>
          ) : (
            <ul class="artifacts">
              {result.artifacts.map((a) => (
                <li key={a.name}>
                  <a href={a.url} download={a.name}>
                    {a.name}
                  </a>{" "}
                  <span class="muted">({formatBytes(a.size)})</span>
                </li>
              ))}
            </ul>
          )}
        </>
      ) : null}
    </section>
  );
}

/** The request's logs, fetched from where the last page stopped while following. */
function Logs(props: { token: string; id: string; finished: boolean }) {
  const [lines, setLines] = useState<string[]>([]);
  const [follow, setFollow] = useState(true);
  const [problem, setProblem] = useState<ApiProblem | null>(null);
  const box = useRef<HTMLPreElement>(null);
  const finished = useRef(props.finished);
  finished.current = props.finished;

  useEffect(() => {
    setLines([]);
    let cursor: string | undefined;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const read = async () => {
      let more = false;
      try {
        const q = cursor ? `?cursor=${enc(cursor)}` : "";
        const page = await api<{ lines: string[]; nextCursor: string }>(
          props.token,
          `/v1/requests/${enc(props.id)}/logs${q}`,
        );
        if (stopped) return;
        cursor = page.nextCursor;
        more = page.lines.length > 0;
        if (more) setLines((old) => [...old, ...page.lines]);
        setProblem(null);
      } catch (error) {
        if (stopped) return;
        setProblem(error instanceof ApiProblem ? error : null);
      }
      // A finished request's log is complete once a read brings nothing new.
      if (!stopped && (more || !finished.current)) {
        timer = setTimeout(read, more ? 0 : POLL_MS);
      }
    };
    void read();
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [props.token, props.id]);

  useEffect(() => {
    const el = box.current;
    if (follow && el) el.scrollTop = el.scrollHeight;
  }, [lines, follow]);

  return (
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <div class="toolbar">
        <input
          id="follow"
          type="checkbox"
          checked={follow}
          onChange={(e) => setFollow((e.target as HTMLInputElement).checked)}
        />
        <label for="follow">Follow (scroll to the newest line)</label>
      </div>
      {problem ? (
        <p class="problem" role="alert">
          {problem.detail}
        </p>
      ) : null}
      <pre class="logs" ref={box} data-testid="logs">
        {lines.length === 0 ? "(no output yet)" : lines.join("\n")}
      </pre>
    </section>
  );
}
