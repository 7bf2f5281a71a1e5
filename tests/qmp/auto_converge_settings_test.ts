/**
 * The QMP monitor turns auto-converge on (QEMU 7.2 has it) and hands its
 * throttling parameters to the engine, live during a migration too.
 */
import assert from "node:assert/strict";
import { MigrationSettings } from "../../lib/qmp/_migration_settings.ts";

Deno.test("the monitor accepts auto-converge and passes its parameters to the engine", () => {
  const settings = new MigrationSettings();
  settings.setCapabilities({
    capabilities: [{ capability: "auto-converge", state: true }],
  }, { migrationRunning: false, incoming: false });
  assert.deepEqual(settings.livemigCapabilities(), { "auto-converge": true });
  const changed = settings.setParameters({
    "cpu-throttle-initial": 30,
    "cpu-throttle-tailslow": true,
  });
  assert.equal(changed["cpu-throttle-initial"], 30);
  assert.equal(changed["cpu-throttle-tailslow"], true);
  const parameters = settings.livemigParameters();
  assert.equal(parameters["throttle-trigger-threshold"], 50);
  assert.equal(parameters["cpu-throttle-increment"], 10);
  assert.equal(parameters["max-cpu-throttle"], 99);
});
