import assert from "node:assert/strict";
import {
  decideIteration,
  expectedDowntime,
  type IterationDecision,
  type IterationState,
  switchoverThreshold,
} from "../../mod.ts";

const MB = 1_000_000;
const BASE: IterationState = {
  pendingBytes: 64 * MB,
  exact: false,
  thresholdBytes: 30 * MB,
  postcopyRequested: false,
  inPostcopy: false,
  mustPrecopyBytes: 0,
};

const CASES: [string, Partial<IterationState>, IterationDecision][] = [
  ["the estimate is above the threshold", {}, { step: "iterate" }],
  ["the estimate is below the threshold: sync for the exact value", {
    pendingBytes: 10 * MB,
  }, {
    step: "sync",
  }],
  ["the exact value is below the threshold", {
    pendingBytes: 10 * MB,
    exact: true,
  }, {
    step: "complete",
    reason: "fits-downtime",
  }],
  [
    "the exact value is still above the threshold after a sync",
    { exact: true },
    {
      step: "iterate",
    },
  ],
  ["nothing is pending and the threshold is 0 (no window closed yet)", {
    pendingBytes: 0,
    thresholdBytes: 0,
  }, { step: "complete", reason: "nothing-pending" }],
  ["something is pending and the threshold is 0", {
    pendingBytes: 4096,
    thresholdBytes: 0,
  }, {
    step: "iterate",
  }],
  ["pending equals the threshold (QEMU needs strictly less)", {
    pendingBytes: 30 * MB,
    exact: true,
  }, { step: "iterate" }],
  ["postcopy was requested and RAM does not fit", { postcopyRequested: true }, {
    step: "postcopy",
  }],
  ["postcopy was requested but RAM fits: precopy completes first", {
    postcopyRequested: true,
    pendingBytes: 1 * MB,
    exact: true,
  }, { step: "complete", reason: "fits-downtime" }],
  ["postcopy was requested but must-precopy state exceeds the threshold", {
    postcopyRequested: true,
    mustPrecopyBytes: 40 * MB,
  }, { step: "iterate" }],
  ["postcopy is already running: never a sync, never postcopy again", {
    postcopyRequested: true,
    inPostcopy: true,
    pendingBytes: 1 * MB,
  }, { step: "complete", reason: "fits-downtime" }],
];

for (const [name, state, expected] of CASES) {
  Deno.test(`decideIteration() when ${name}`, () => {
    assert.deepEqual(decideIteration({ ...BASE, ...state }), expected);
  });
}

Deno.test("switchoverThreshold() is bandwidth × downtime-limit", () => {
  assert.equal(
    switchoverThreshold({
      measuredBytesPerMs: 134_217.728,
      downtimeLimitMs: 300,
      availSwitchoverBandwidth: 0,
    }),
    134_217.728 * 300,
  );
  assert.equal(
    switchoverThreshold({
      measuredBytesPerMs: 0,
      downtimeLimitMs: 300,
      availSwitchoverBandwidth: 0,
    }),
    0,
  );
  assert.equal(
    switchoverThreshold({
      measuredBytesPerMs: 1,
      downtimeLimitMs: 300,
      availSwitchoverBandwidth: 10 * MB,
    }),
    3 * MB,
  );
});

Deno.test("expectedDowntime() divides what remains by the bandwidth", () => {
  assert.equal(
    expectedDowntime({
      remainingBytes: 0,
      bytesPerMs: 10,
      downtimeLimitMs: 300,
    }),
    0,
  );
  assert.equal(
    expectedDowntime({
      remainingBytes: 1000,
      bytesPerMs: 10,
      downtimeLimitMs: 300,
    }),
    100,
  );
  assert.equal(
    expectedDowntime({
      remainingBytes: 1000,
      bytesPerMs: 0,
      downtimeLimitMs: 250,
    }),
    250,
  );
});
