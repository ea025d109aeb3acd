/**
 * vitest globalSetup: one AWS emulator endpoint for the whole run. With
 * LONGRUN_TEST_ENDPOINT set (LocalStack on :4566 where Docker exists) the tests use it as it
 * is; otherwise a moto server is started on a free loopback port and stopped at the end.
 * Test files share the endpoint and isolate themselves by unique resource names, so they can
 * run in parallel (a reset between files would wipe a neighbour's state).
 */
import type { TestProject } from "vitest/node";
import { type MotoProcess, startMotoServer } from "./moto-process.ts";

declare module "vitest" {
  export interface ProvidedContext {
    awsEndpoint: string;
  }
}

let moto: MotoProcess | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const given = process.env.LONGRUN_TEST_ENDPOINT;
  if (given) {
    project.provide("awsEndpoint", given.replace(/\/$/, ""));
    return async () => {};
  }
  moto = await startMotoServer();
  project.provide("awsEndpoint", moto.endpoint);
  return async () => {
    void moto?.stop();
  };
}
