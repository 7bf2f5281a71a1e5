import assert from "node:assert/strict";
import {
  isRunningStatus,
  MigrationState,
  type MigrationStatus,
  nextStatuses,
} from "../../mod.ts";

const ALL: MigrationStatus[] = [
  "none",
  "setup",
  "cancelling",
  "cancelled",
  "active",
  "postcopy-active",
  "postcopy-paused",
  "postcopy-recover-setup",
  "postcopy-recover",
  "completed",
  "failed",
  "colo",
  "pre-switchover",
  "device",
  "wait-unplug",
];

function walk(
  role: "source" | "destination",
  path: MigrationStatus[],
): MigrationState {
  const state = new MigrationState(role);
  for (const status of path) state.moveTo(status);
  return state;
}

Deno.test("MigrationState covers every QEMU status on both ends", () => {
  for (const status of ALL) {
    assert.ok(Array.isArray(nextStatuses("source", status)), status);
    assert.ok(Array.isArray(nextStatuses("destination", status)), status);
  }
});

Deno.test("MigrationState follows QEMU's precopy paths", () => {
  walk("source", ["setup", "active", "completed"]);
  walk("source", ["setup", "active", "device", "completed"]);
  walk("source", ["setup", "active", "pre-switchover", "device", "completed"]);
  walk("source", [
    "setup",
    "active",
    "completed",
    "setup",
    "active",
    "failed",
    "setup",
  ]);
  walk("destination", ["setup", "active", "completed"]);
});

Deno.test("MigrationState follows QEMU's postcopy paths", () => {
  walk("source", [
    "setup",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
    "postcopy-paused",
    "postcopy-recover",
    "postcopy-active",
    "completed",
  ]);
  walk("source", [
    "setup",
    "active",
    "device",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover-setup",
    "postcopy-recover",
    "postcopy-active",
  ]);
  walk("destination", [
    "setup",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
    "postcopy-active",
    "completed",
  ]);
});

Deno.test("MigrationState lets every running precopy status be cancelled", () => {
  for (
    const status of [
      "setup",
      "active",
      "pre-switchover",
      "device",
      "wait-unplug",
    ] as const
  ) {
    assert.ok(nextStatuses("source", status).includes("cancelling"), status);
  }
  walk("source", ["setup", "active", "cancelling", "cancelled"]);
});

Deno.test("MigrationState refuses to cancel postcopy, which would lose the guest", () => {
  for (
    const status of [
      "postcopy-active",
      "postcopy-paused",
      "postcopy-recover",
    ] as const
  ) {
    assert.ok(!nextStatuses("source", status).includes("cancelling"), status);
  }
  const state = walk("source", ["setup", "active", "postcopy-active"]);
  assert.throws(
    () => state.moveTo("cancelling"),
    /Cannot move source migration from "postcopy-active" to "cancelling"/,
  );
});

Deno.test("MigrationState refuses illegal moves and compare-and-swaps", () => {
  const state = new MigrationState("source");
  assert.throws(() => state.moveTo("completed"), TypeError);
  assert.equal(state.moveFrom("active", "completed"), false);
  state.moveTo("setup");
  assert.equal(state.moveFrom("setup", "active"), true);
  assert.equal(state.status, "active");
});

Deno.test("MigrationState emits a MIGRATION event for each move", () => {
  const state = new MigrationState("destination");
  const seen: string[] = [];
  state.addEventListener(
    "migration",
    (event) => seen.push((event as CustomEvent).detail.status),
  );
  state.moveTo("setup");
  state.moveTo("active");
  state.moveTo("failed");
  assert.deepEqual(seen, ["setup", "active", "failed"]);
});

Deno.test("isRunningStatus() matches QEMU's running set", () => {
  assert.deepEqual(
    ALL.filter(isRunningStatus).sort(),
    [
      "active",
      "cancelling",
      "colo",
      "device",
      "postcopy-active",
      "postcopy-paused",
      "postcopy-recover",
      "postcopy-recover-setup",
      "pre-switchover",
      "setup",
      "wait-unplug",
    ],
  );
});
