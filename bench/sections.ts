/**
 * The sections of `npm run bench`, in the order they run and appear in the report.
 * A new benchmark is a module exporting a {@link BenchSection}, added here.
 */
import { lifecycleSection } from "./lifecycle-report.ts";
import type { BenchSection } from "./section.ts";

export const SECTIONS: readonly BenchSection[] = [lifecycleSection];
