import { describe, expect, it } from "vitest";
import { InProcessTrigger } from "../../functions/adapters/embedded/in-process-trigger.ts";

/** A dispatch that holds every pass until `release`, counting passes in flight. */
function heldDispatch() {
  let release!: () => void;
  let held = new Promise<void>((r) => {
    release = r;
  });
  const state = { inFlight: 0, most: 0, calls: 0 };
  const dispatch = async () => {
    state.calls++;
    state.inFlight++;
    state.most = Math.max(state.most, state.inFlight);
    await held;
    state.inFlight--;
  };
  return {
    state,
    dispatch,
    release: () => {
      release();
      held = Promise.resolve();
    },
  };
}

describe("InProcessTrigger", () => {
  it("runs width(queue) dispatch passes side by side, and once more for a wake-up meanwhile", async () => {
    // Arrange
    const d = heldDispatch();
    const errors: unknown[] = [];
    const trigger = new InProcessTrigger(
      d.dispatch,
      (_q, e) => errors.push(e),
      (q) => (q === "wide" ? 3 : 1),
    );

    // Act: a wake-up, another while its passes run, then let them end.
    await trigger.wake("wide");
    await new Promise((r) => setImmediate(r));
    const sideBySide = d.state.inFlight;
    await trigger.wake("wide");
    d.release();
    await trigger.idle();

    // Assert
    expect(sideBySide).toBe(3);
    expect(d.state.most).toBe(3);
    expect(d.state.calls).toBe(6); // the first run's 3 passes, then the coalesced wake-up's 3
    expect(errors).toEqual([]);
  });

  it("runs one pass at a time where the width is 1 (the default)", async () => {
    const d = heldDispatch();
    const trigger = new InProcessTrigger(d.dispatch, () => {});
    await trigger.wake("q");
    await trigger.wake("q");
    await new Promise((r) => setImmediate(r));
    d.release();
    await trigger.idle();
    expect(d.state.most).toBe(1);
    expect(d.state.calls).toBe(2);
  });
});
