import { describe, expect, it } from "vitest";
import { canonicalJson, sha256Hex } from "../../../functions/core/canonical.ts";
import {
  ACTIVE_STATUSES,
  ALL_STATUSES,
  canTransition,
  counterDelta,
  isTerminal,
  type RequestStatus,
  readyOrderKey,
  statusClass,
  TERMINAL_STATUSES,
} from "../../../functions/core/request.ts";
import { REQUEST_ID_PATTERN, SequentialIds } from "../../helpers/fakes.ts";

describe("lifecycle table", () => {
  it("allows no transition out of a terminal status, not even to itself", () => {
    // Prepare
    const pairs = TERMINAL_STATUSES.flatMap((from) => ALL_STATUSES.map((to) => [from, to]));

    // Act
    const allowed = pairs.filter(([from, to]) => canTransition(from!, to!));

    // Assess
    expect(pairs).toHaveLength(4 * 7);
    expect(allowed).toEqual([]);
  });

  it("allows the retry RUNNING → STARTING and STARTING → STARTING", () => {
    expect(canTransition("RUNNING", "STARTING")).toBe(true);
    expect(canTransition("STARTING", "STARTING")).toBe(true);
  });

  it("allows QUEUED only to start, be cancelled, expire or stay", () => {
    // Act
    const targets = ALL_STATUSES.filter((to) => canTransition("QUEUED", to));

    // Assess
    expect(targets.sort()).toEqual(["CANCELLED", "EXPIRED", "QUEUED", "STARTING"]);
  });

  it("never lets a started request go back to QUEUED or become EXPIRED", () => {
    for (const from of ACTIVE_STATUSES) {
      expect(canTransition(from, "QUEUED"), from).toBe(false);
      expect(canTransition(from, "EXPIRED"), from).toBe(false);
    }
  });

  it("lets an active request end in each of SUCCEEDED, FAILED, CANCELLED", () => {
    for (const from of ACTIVE_STATUSES) {
      for (const to of ["SUCCEEDED", "FAILED", "CANCELLED"] as const) {
        expect(canTransition(from, to), `${from}→${to}`).toBe(true);
      }
    }
  });

  it("classifies every status into queued, active or terminal", () => {
    // Act
    const classes = Object.fromEntries(ALL_STATUSES.map((s) => [s, statusClass(s)]));

    // Assess
    expect(classes).toEqual({
      QUEUED: "queued",
      STARTING: "active",
      RUNNING: "active",
      SUCCEEDED: "terminal",
      FAILED: "terminal",
      CANCELLED: "terminal",
      EXPIRED: "terminal",
    });
    expect(ALL_STATUSES.filter(isTerminal)).toEqual(TERMINAL_STATUSES);
  });

  it.each<[RequestStatus, RequestStatus, { queued: number; running: number }]>([
    ["QUEUED", "QUEUED", { queued: 0, running: 0 }],
    ["QUEUED", "STARTING", { queued: -1, running: 1 }],
    ["QUEUED", "CANCELLED", { queued: -1, running: 0 }],
    ["QUEUED", "EXPIRED", { queued: -1, running: 0 }],
    ["STARTING", "RUNNING", { queued: 0, running: 0 }],
    ["RUNNING", "STARTING", { queued: 0, running: 0 }],
    ["RUNNING", "RUNNING", { queued: 0, running: 0 }],
    ["STARTING", "FAILED", { queued: 0, running: -1 }],
    ["RUNNING", "SUCCEEDED", { queued: 0, running: -1 }],
    ["RUNNING", "CANCELLED", { queued: 0, running: -1 }],
  ])("moves counters by class for %s → %s", (from, to, expected) => {
    expect(counterDelta(from, to)).toEqual(expected);
  });

  it("gives a counter delta that keeps queued + running + terminal constant for every allowed transition", () => {
    for (const from of ALL_STATUSES) {
      for (const to of ALL_STATUSES) {
        if (!canTransition(from, to)) continue;
        // Act
        const d = counterDelta(from, to);
        const terminalDelta = (isTerminal(to) ? 1 : 0) - (isTerminal(from) ? 1 : 0);

        // Assess
        expect(d.queued + d.running + terminalDelta, `${from}→${to}`).toBe(0);
      }
    }
  });
});

describe("readyOrderKey", () => {
  it("sorts higher priority first, then older first, then by id", () => {
    // Prepare
    const rows = [
      { id: "req_b", priority: 0, createdAt: 1000 },
      { id: "req_a", priority: 0, createdAt: 1000 },
      { id: "req_c", priority: 9, createdAt: 5000 },
      { id: "req_d", priority: 5, createdAt: 10 },
      { id: "req_e", priority: 0, createdAt: 999 },
      { id: "req_f", priority: 5, createdAt: 1_800_000_000_000 },
    ];

    // Act
    const order = [...rows]
      .sort((x, y) => (readyOrderKey(x) < readyOrderKey(y) ? -1 : 1))
      .map((r) => r.id);

    // Assess
    expect(order).toEqual(["req_c", "req_d", "req_f", "req_e", "req_a", "req_b"]);
  });

  it("compares epoch-millisecond times of different digit counts correctly", () => {
    const older = readyOrderKey({ id: "req_x", priority: 3, createdAt: 99_999 });
    const newer = readyOrderKey({ id: "req_x", priority: 3, createdAt: 100_000 });
    expect(older < newer).toBe(true);
  });
});

describe("canonicalJson", () => {
  it("is equal for bodies equal as parsed JSON whatever the key order and depth", () => {
    // Prepare
    const a = JSON.parse('{"input": {"b": [1, {"y": 2, "x": 1}], "a": null}, "priority": 5}');
    const b = JSON.parse('{"priority":5,"input":{"a":null,"b":[1,{"x":1,"y":2}]}}');

    // Act / Assess
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(canonicalJson(a)).toBe('{"input":{"a":null,"b":[1,{"x":1,"y":2}]},"priority":5}');
  });

  it("keeps array order significant", () => {
    expect(canonicalJson([1, 2])).not.toBe(canonicalJson([2, 1]));
  });

  it("tells apart values of different types and nesting", () => {
    // Prepare
    const values = [null, 0, "0", false, [], {}, [null], { a: null }, { a: {} }, "a", ["a"]];

    // Act
    const encoded = new Set(values.map(canonicalJson));

    // Assess
    expect(encoded.size).toBe(values.length);
  });

  it("drops undefined object members as JSON.stringify does", () => {
    expect(canonicalJson({ a: 1, b: undefined })).toBe(canonicalJson({ a: 1 }));
    expect(canonicalJson(undefined)).toBe("null");
  });

  it("escapes keys and strings as JSON", () => {
    // Prepare
    const value = { 'k"ey': 'va"l\n' };

    // Act
    const text = canonicalJson(value);

    // Assess
    expect(JSON.parse(text)).toEqual(value);
    expect(sha256Hex(text)).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe("SequentialIds (test helper)", () => {
  it("makes req_ ids with a ULID body that sort in creation order", () => {
    // Prepare
    const ids = new SequentialIds();

    // Act
    const made = Array.from({ length: 40 }, () => ids.requestId());

    // Assess
    for (const id of made) expect(id).toMatch(REQUEST_ID_PATTERN);
    expect([...made].sort()).toEqual(made);
    expect(new Set(made).size).toBe(made.length);
  });
});
