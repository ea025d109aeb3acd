export * from "./canonical.ts";
export * from "./errors.ts";
export type * from "./ports.ts";
export * from "./request.ts";
export * from "./usecases/deps.ts";
export * from "./usecases/lifecycle.ts";
export * from "./usecases/queries.ts";
export * from "./usecases/repair.ts";
export * from "./usecases/submit.ts";
