import { describe, expect, it } from "vitest";
import type { RequestRecord, RequestStatus } from "../../../functions/core/request.ts";
import { type FigureSink, LifecycleFigures } from "../../../functions/metrics/figures.ts";

/** A sink that writes down every figure it gets. */
class RecordingSink implements FigureSink {
  readonly seen: string[] = [];
  submitted(queue: string) {
    this.seen.push(`submitted ${queue}`);
  }
  finished(queue: string, status: RequestStatus) {
    this.seen.push(`finished ${queue} ${status}`);
  }
  waited(queue: string, seconds: number) {
    this.seen.push(`waited ${queue} ${seconds}`);
  }
  ran(queue: string, seconds: number) {
    this.seen.push(`ran ${queue} ${seconds}`);
  }
  webhookDelivery(result: string) {
    this.seen.push(`webhook ${result}`);
  }
}

const request = (over: Partial<RequestRecord> = {}) =>
  ({ id: "req_1", queue: "gpu", createdAt: 1_000, startedAt: null, ...over }) as RequestRecord;

describe("LifecycleFigures", () => {
  it("takes an attempt's run time from the backend's own start when it reports one", () => {
    const sink = new RecordingSink();
    const figures = new LifecycleFigures(sink);
    // No RUNNING was seen by this process (another Lambda environment handled it).
    figures.observe({
      type: "attemptEnded",
      request: request(),
      attempt: 2,
      at: 50_000,
      outcome: "failed",
      startedAt: 20_000,
    });
    expect(sink.seen).toEqual(["ran gpu 30"]);
  });

  it("uses the RUNNING it saw, per attempt, and counts nothing for an attempt that never ran", () => {
    const sink = new RecordingSink();
    const figures = new LifecycleFigures(sink);
    figures.observe({ type: "running", request: request(), attempt: 1, at: 10_000 });
    figures.observe({
      type: "attemptEnded",
      request: request(),
      attempt: 1,
      at: 12_500,
      outcome: "failed",
    });
    // Attempt 2 failed to launch: no RUNNING, no start from the backend.
    figures.observe({
      type: "attemptEnded",
      request: request(),
      attempt: 2,
      at: 13_000,
      outcome: "failed",
    });
    expect(sink.seen).toEqual(["ran gpu 2.5"]);
  });

  it("counts the wait once, at the first RUNNING, and every final status", () => {
    const sink = new RecordingSink();
    const figures = new LifecycleFigures(sink);
    figures.onChange(request({ startedAt: 4_000, status: "RUNNING" }), "started");
    figures.onChange(request({ status: "RUNNING" }), "progress");
    figures.onChange(request({ status: "SUCCEEDED" }), "completed");
    expect(sink.seen).toEqual(["waited gpu 3", "finished gpu SUCCEEDED"]);
  });

  it("never lets a failing sink reach the state change it describes", () => {
    const figures = new LifecycleFigures({
      ...new RecordingSink(),
      submitted: () => {
        throw new Error("sink down");
      },
    } as unknown as FigureSink);
    expect(() => figures.observe({ type: "submitted", request: request() })).not.toThrow();
  });
});
