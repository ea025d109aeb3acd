/** The runtime-agnostic HTTP API (see app.ts); mounted by the Node server and Lambda. */
export * from "./app.ts";
export * from "./auth.ts";
export * from "./dashboard.ts";
export * from "./openapi.ts";
export * from "./problem.ts";
export * from "./schemas.ts";
export type * from "./types.ts";
export * from "./views.ts";
