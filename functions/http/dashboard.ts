/**
 * How the API serves the dashboard's static files (SPEC §2 "GET /ui/"): where they come
 * from is the runtime's business (built on demand by the embedded server, read from the
 * Lambda bundle on AWS); the headers every one of them carries are decided here, once.
 */

/** One static file of the dashboard. */
export interface DashboardFile {
  body: Uint8Array;
  contentType: string;
}

/** The dashboard's files by name (`index.html`, `app.js`, …), loaded on first use. */
export type DashboardAssets = () => Promise<ReadonlyMap<string, DashboardFile>>;

/**
 * The page runs only its own script and style sheet from its own origin, talks only to its
 * own origin, and may not be framed; nothing inline, nothing from elsewhere.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers of every dashboard file. */
export function dashboardHeaders(contentType: string): Record<string, string> {
  return {
    "content-type": contentType,
    "content-security-policy": DASHBOARD_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    // Small files, rebuilt with the code: always revalidate so an upgrade shows at once.
    "cache-control": "no-cache",
  };
}
