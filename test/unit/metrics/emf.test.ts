import { Metrics } from "@aws-lambda-powertools/metrics";
import { afterEach, describe, expect, it, vi } from "vitest";
import { listenAll } from "../../../functions/core/usecases/deps.ts";
import { dispatchQueue } from "../../../functions/core/usecases/lifecycle.ts";
import { EmfMetrics } from "../../../functions/metrics/emf.ts";
import { CLOUDWATCH_METRICS, LifecycleFigures } from "../../../functions/metrics/figures.ts";
import { makeDeps, submitVia, type TestHarness } from "../../helpers/fakes.ts";

let h: TestHarness | undefined;
afterEach(() => {
  vi.restoreAllMocks();
  h?.close();
});

/** Every EMF object written to stdout while `act` runs. */
async function emfOf(act: () => Promise<void>): Promise<Record<string, any>[]> {
  const printed: string[] = [];
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: any) => {
    printed.push(String(chunk));
    return true;
  });
  await act();
  vi.restoreAllMocks();
  return printed
    .flatMap((p) => p.split("\n"))
    .filter((l) => l.includes('"_aws"'))
    .map((l) => JSON.parse(l));
}

/** The dimension names CloudWatch will key the line's metric by. */
function dimensionsOf(line: Record<string, any>): string[] {
  return [...(line._aws.CloudWatchMetrics[0].Dimensions[0] as string[])].sort();
}

describe("Lambda figures in embedded metric format", () => {
  it("publishes submits, finishes by status, waits, run times and the queue gauge", async () => {
    h = makeDeps({ gpu: { maxRunning: 1, maxAttempts: 1 } });
    const emf = new EmfMetrics(new Metrics({ namespace: "longrun", serviceName: "longrun" }));
    const figures = new LifecycleFigures(emf);
    Object.assign(h.deps, listenAll([figures]));
    const harness = h;

    const lines = await emfOf(async () => {
      const { id } = await submitVia(harness, { queue: "gpu" });
      await submitVia(harness, { queue: "gpu" });
      harness.clock.advanceSeconds(4);
      await dispatchQueue("gpu", harness.deps);
      await harness.compute.running(id, 1);
      harness.clock.advanceSeconds(10);
      await harness.compute.exited(id, 1, "failed");
      // The freed slot goes to the second request, whose job has not reported yet.
      await dispatchQueue("gpu", harness.deps);
      await emf.publishQueueRequests(harness.store, harness.deps.queues);
    });

    const find = (name: string, dims: Record<string, string> = {}) =>
      lines.filter(
        (l) => l[name] !== undefined && Object.entries(dims).every(([k, v]) => l[k] === v),
      );
    expect(find(CLOUDWATCH_METRICS.submitted, { queue: "gpu" })).toHaveLength(2);
    const failed = find(CLOUDWATCH_METRICS.finished, { queue: "gpu", status: "FAILED" });
    expect(failed).toHaveLength(1);
    expect(dimensionsOf(failed[0] as Record<string, any>)).toEqual(["queue", "service", "status"]);
    expect(failed[0]?._aws.CloudWatchMetrics[0].Namespace).toBe("longrun");
    expect(find(CLOUDWATCH_METRICS.wait, { queue: "gpu" }).map((l) => l.WaitSeconds)).toEqual([4]);
    expect(find(CLOUDWATCH_METRICS.run, { queue: "gpu" }).map((l) => l.RunSeconds)).toEqual([10]);
    const gauge = find(CLOUDWATCH_METRICS.queueRequests, { queue: "gpu" });
    expect(Object.fromEntries(gauge.map((l) => [l.status, l.QueueRequests]))).toEqual({
      QUEUED: 0,
      STARTING: 1,
      RUNNING: 0,
    });
    // No tenant dimension, as on Prometheus.
    for (const l of lines) expect(l.tenant).toBeUndefined();
  });

  it("counts webhook tries by result", async () => {
    const emf = new EmfMetrics(new Metrics({ namespace: "longrun", serviceName: "longrun" }));
    const figures = new LifecycleFigures(emf);
    const lines = await emfOf(async () => {
      figures.webhookTried(true);
      figures.webhookTried(false);
    });
    expect(lines.map((l) => [l.result, l[CLOUDWATCH_METRICS.webhookDeliveries]])).toEqual([
      ["delivered", 1],
      ["failed", 1],
    ]);
  });
});
