import assert from "node:assert/strict";
import {
  checkBackgroundSnapshot,
  checkCapabilities,
  checkCapabilityName,
  createMemoryTransportPair,
  DEFAULT_CAPABILITIES,
  GuestMemory,
  HostedGuest,
  MigrationAbortedError,
  type MigrationCapabilities,
  NotSupportedError,
  SimulatedGuest,
  SourceMigration,
  WasmProgram,
} from "../../mod.ts";
import { exchanges, loadTranscript } from "../qmp/_fixtures.ts";

/** Every `background-snapshot` + X that QEMU 7.2 answered, recorded. */
function recordedCombinations(): {
  capabilities: Record<string, boolean>;
  desc: string | undefined;
}[] {
  return exchanges(loadTranscript("capabilities"))
    .filter((e) =>
      e.request?.execute === "migrate-set-capabilities" &&
      JSON.stringify(e.request.arguments).startsWith(
        '{"capabilities":[{"capability":"background-snapshot","state":true},',
      )
    )
    .map((e) => ({
      capabilities: Object.fromEntries(
        (e.request!.arguments!.capabilities as {
          capability: string;
          state: boolean;
        }[]).map((c) => [c.capability, c.state]),
      ),
      desc: (e.reply.error as { desc: string } | undefined)?.desc,
    }));
}

/** Whether livemig implements every capability turned on. */
function implemented(capabilities: Record<string, boolean>): boolean {
  return Object.entries(capabilities).every(([name, on]) => {
    if (!on) return true;
    try {
      checkCapabilityName(name);
      return true;
    } catch {
      return false;
    }
  });
}

Deno.test("checkCapabilities() refuses background-snapshot with what QEMU 7.2 refused it with, in its words", () => {
  const recorded = recordedCombinations().filter((r) =>
    implemented(r.capabilities)
  );
  // postcopy-ram (twice), postcopy-blocktime, return-path, multifd,
  // pause-before-switchover, auto-converge, xbzrle, validate-uuid, and
  // the ones QEMU accepted.
  assert.ok(recorded.length >= 10, `${recorded.length} combinations`);
  let refused = 0;
  for (const { capabilities, desc } of recorded) {
    const all = {
      ...DEFAULT_CAPABILITIES,
      ...capabilities,
    } as MigrationCapabilities;
    const what = JSON.stringify(capabilities);
    if (desc === undefined) {
      checkCapabilities(all);
    } else if (desc.startsWith("Background-snapshot")) {
      assert.throws(() => checkCapabilities(all), {
        name: "TypeError",
        message: desc,
      }, what);
      refused++;
    } else {
      // QEMU's other checks (postcopy-preempt without postcopy-ram) have
      // livemig's own words.
      assert.throws(() => checkCapabilities(all), TypeError, what);
    }
  }
  assert.ok(refused >= 9, `${refused} refusals`);
});

Deno.test("checkBackgroundSnapshot() lets events and dirty-limit through and refuses mapped-ram as not supported", () => {
  checkBackgroundSnapshot({ "background-snapshot": true, events: true });
  checkBackgroundSnapshot({ "background-snapshot": true, "dirty-limit": true });
  assert.throws(
    () =>
      checkBackgroundSnapshot({
        "background-snapshot": true,
        "mapped-ram": true,
      }),
    NotSupportedError,
  );
});

Deno.test("SourceMigration refuses background-snapshot with xbzrle at construction, with QEMU 7.2's text", () => {
  const guest = new SimulatedGuest({ ramBytes: 4096, running: false });
  assert.throws(
    () =>
      new SourceMigration(guest, {
        capabilities: { "background-snapshot": true, xbzrle: true },
      }),
    { message: "Background-snapshot is not compatible with xbzrle" },
  );
});

Deno.test("a background snapshot of a WasmGuest is refused by name, and the program keeps running", async () => {
  const program = await WasmProgram.compile(
    await Deno.readFile(
      new URL("../../examples/wasm/life.wasm", import.meta.url),
    ),
  );
  const guest = program.createGuest({
    budget: 4096,
    setup: (exports) => (exports.init as (mib: number) => void)(1),
  });
  const [a] = createMemoryTransportPair();
  const source = new SourceMigration(guest, {
    capabilities: { "background-snapshot": true },
  });
  const error = await source.migrate(a).catch((error) => error);
  assert.ok(error instanceof MigrationAbortedError, String(error));
  assert.equal(
    error.message,
    "Cannot take a background snapshot of a WasmGuest: the program writes its memory without a copy-before-write hook",
  );
  assert.ok(error.cause instanceof NotSupportedError);
  assert.equal(source.status, "failed");
  assert.ok(guest.running);
  await guest.pause();
});

Deno.test("GuestMemory.write() says why a guarded page cannot be written now", () => {
  const memory = new GuestMemory([{ idstr: "a", size: 2 * 4096 }]);
  const guest = new HostedGuest({ memory });
  memory.guardWrites({
    mayWrite: (_block, page) => page === 0,
    wait: () => Promise.resolve(),
    written() {},
  });
  memory.write("a", 0, new Uint8Array([1]));
  assert.throws(
    () => memory.write("a", 4096, new Uint8Array([1])),
    /^TypeError: Cannot write to page 1 of RAM block "a": the write guard holds it back \(a background snapshot has not saved it and its copy budget is full\); await prepareWrite\(\) first$/,
  );
  assert.equal(guest.memory.blocks[0]!.bytes[4096], 0);
  memory.guardWrites(undefined);
  memory.write("a", 4096, new Uint8Array([1]));
});
