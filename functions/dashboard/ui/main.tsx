/**
 * The longrun dashboard: sign in with a token, then queues, a queue's requests and one
 * request, each refreshing itself. Views are chosen by the URL's fragment (`#/queues/x`,
 * `#/requests/req_…`), which holds no secret; the token stays in sessionStorage.
 */
import { render } from "preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiProblem, api, forgetToken, type QueueJson, storedToken, storeToken } from "./api.ts";
import { QueuePage, QueuesPage, RequestPage } from "./views.tsx";
import "./style.css";

type Route =
  | { view: "queues" }
  | { view: "queue"; queue: string }
  | { view: "request"; id: string }
  | { view: "unknown" };

function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "") || "/";
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { view: "queues" };
  if (parts[0] === "queues" && parts.length === 2 && parts[1]) {
    return { view: "queue", queue: parts[1] };
  }
  if (parts[0] === "requests" && parts.length === 2 && parts[1]) {
    return { view: "request", id: parts[1] };
  }
  return { view: "unknown" };
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

function SignIn(props: { onSignedIn: (token: string) => void; notice: string | null }) {
  const [token, setToken] = useState("");
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);

  const submit = async (event: Event) => {
    event.preventDefault();
    const value = token.trim();
    if (value === "") {
      setProblem("Enter a token.");
      return;
    }
    setBusy(true);
    try {
      // Any authenticated read proves the token; the queues are what comes next anyway.
      await api<QueueJson[]>(value, "/v1/queues");
      storeToken(value);
      props.onSignedIn(value);
    } catch (error) {
      setProblem(error instanceof ApiProblem ? error.detail : String(error));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" class="signin">
      <h1>longrun</h1>
      <p>Sign in with an API token. It is kept in this tab only and forgotten when it closes.</p>
      {props.notice ? (
        <p class="notice" role="status">
          {props.notice}
        </p>
      ) : null}
      <form onSubmit={submit} noValidate>
        <label for="token">API token</label>
        <input
          id="token"
          ref={input}
          type="password"
          autocomplete="off"
          spellcheck={false}
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          aria-describedby={problem ? "signin-problem" : undefined}
          aria-invalid={problem ? true : undefined}
        />
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {problem ? (
          <p id="signin-problem" class="problem" role="alert">
            {problem}
          </p>
        ) : null}
      </form>
    </main>
  );
}

function App() {
  const [token, setToken] = useState<string | null>(() => storedToken());
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();

  const signOut = (why: string | null) => {
    forgetToken();
    setToken(null);
    setNotice(why);
  };

  if (token === null) {
    return (
      <SignIn
        notice={notice}
        onSignedIn={(t) => {
          setNotice(null);
          setToken(t);
        }}
      />
    );
  }
  // A token the server stops accepting (revoked, expired) ends the session.
  const onProblem = (p: ApiProblem) => {
    if (p.status === 401) signOut("The server no longer accepts that token; sign in again.");
  };
  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          longrun
        </a>
        <nav aria-label="Main">
          <a href="#/">Queues</a>
        </nav>
        <button type="button" class="secondary" onClick={() => signOut("You are signed out.")}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.view === "queues" ? (
          <QueuesPage token={token} onProblem={onProblem} />
        ) : route.view === "queue" ? (
          <QueuePage token={token} queue={route.queue} onProblem={onProblem} />
        ) : route.view === "request" ? (
          <RequestPage token={token} id={route.id} onProblem={onProblem} />
        ) : (
          <p class="problem" role="alert">
            No such page. <a href="#/">Back to the queues</a>
          </p>
        )}
      </main>
    </>
  );
}

const root = document.getElementById("app");
if (root) {
  root.textContent = "";
  render(<App />, root);
}
