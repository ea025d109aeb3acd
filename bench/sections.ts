/**
 * The sections of `npm run bench`, in the order they run and appear in the report.
 * A new benchmark is a module exporting a {@link BenchSection}, added here.
 */
import { fairnessSection } from "./fairness.ts";
import { lifecycleSection } from "./lifecycle-report.ts";
import { lostWorkSection } from "./lostwork.ts";
import { queriesSection } from "./queries.ts";
import { dispatchScaleSection, startSection } from "./scheduling.ts";
import type { BenchSection } from "./section.ts";
import { submitSection } from "./submit.ts";
import { uploadsSection } from "./uploads.ts";

export const SECTIONS: readonly BenchSection[] = [
  submitSection,
  startSection,
  dispatchScaleSection,
  queriesSection,
  lostWorkSection,
  lifecycleSection,
  uploadsSection,
  fairnessSection,
];
