import assert from "node:assert/strict";
import { createFakeClock } from "../_helpers/fake_clock.ts";
import {
  handleInterrupts,
  type SignalSource,
} from "../../lib/cli/handle_interrupts.ts";

function fakeSignals() {
  const handlers = new Map<string, () => void>();
  const signals: SignalSource = {
    add(signal, handler) {
      handlers.set(signal, handler);
      return true;
    },
    remove(signal) {
      handlers.delete(signal);
    },
  };
  return {
    signals,
    send: (signal: string) => handlers.get(signal)!(),
    handlers,
  };
}

function recorder(postcopy: () => boolean) {
  const done: string[] = [];
  return {
    done,
    handlers: {
      postcopy,
      cancel: (signal: string) => done.push(`cancel ${signal}`),
      warn: () => done.push("warn"),
      giveUp: (signal: string) => done.push(`give up ${signal}`),
    },
  };
}

Deno.test("handleInterrupts() cancels outside postcopy, on SIGINT and SIGTERM", () => {
  const { signals, send } = fakeSignals();
  const { done, handlers } = recorder(() => false);
  const handling = handleInterrupts(handlers, { signals });
  send("SIGINT");
  send("SIGTERM");
  handling.stop();
  assert.deepEqual(done, ["cancel SIGINT", "cancel SIGTERM"]);
});

Deno.test("handleInterrupts() in postcopy warns at the first Ctrl-C and gives up at a second within 5 s", () => {
  const { signals, send } = fakeSignals();
  const clock = createFakeClock();
  const { done, handlers } = recorder(() => true);
  const handling = handleInterrupts(handlers, { signals, clock });
  send("SIGINT");
  clock.advance(5001);
  send("SIGINT"); // too late: a new warning
  clock.advance(4000);
  send("SIGINT");
  handling.stop();
  assert.deepEqual(done, ["warn", "warn", "give up SIGINT"]);
});

Deno.test("handleInterrupts() in postcopy gives up at once on SIGTERM", () => {
  const { signals, send } = fakeSignals();
  const { done, handlers } = recorder(() => true);
  const handling = handleInterrupts(handlers, { signals });
  send("SIGTERM");
  handling.stop();
  assert.deepEqual(done, ["give up SIGTERM"]);
});

Deno.test("handleInterrupts() stops listening", () => {
  const { signals, handlers: listening } = fakeSignals();
  const { handlers } = recorder(() => false);
  const handling = handleInterrupts(handlers, { signals });
  assert.deepEqual([...listening.keys()], ["SIGINT", "SIGTERM"]);
  handling.stop();
  assert.equal(listening.size, 0);
});
