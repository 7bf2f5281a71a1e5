import assert from "node:assert/strict";
import { createManualClock } from "../_helpers/manual_clock.ts";
import {
  type ProgressMode,
  showProgress,
} from "../../lib/cli/show_progress.ts";
import { capture } from "./_cli.ts";

async function tick(clock: ReturnType<typeof createManualClock>, ms: number) {
  await clock.untilSleeping();
  clock.advance(ms);
  await new Promise((resolve) => setTimeout(resolve, 0));
}

function migration() {
  let pass = 0;
  return { query: () => ({ status: "active" as const, pass: ++pass }) };
}

const format = (info: { status: string; pass: number }) =>
  `${info.status} ${info.pass}`;

Deno.test("showProgress() prints a line every 5 s when stderr is not a terminal", async () => {
  const clock = createManualClock();
  const io = capture(false);
  const stop = showProgress(migration(), io, { clock, format });
  await tick(clock, 4999);
  assert.equal(io.err, "");
  await tick(clock, 1);
  await tick(clock, 5000);
  stop();
  assert.equal(io.err, "livemig: active 1\nlivemig: active 2\n");
  assert.equal(clock.sleeping, 0);
});

Deno.test("showProgress() rewrites one line on a terminal and clears it at the end", async () => {
  const clock = createManualClock();
  const io = capture(true);
  const stop = showProgress(migration(), io, { clock, format });
  await tick(clock, 200);
  await tick(clock, 200);
  stop();
  assert.equal(io.err, "\r\x1b[Kactive 1\r\x1b[Kactive 2\r\x1b[K");
});

for (
  const [mode, terminal, expected] of [
    ["lines", true, "livemig: active 1\n"],
    ["tty", false, "\r\x1b[Kactive 1\r\x1b[K"],
    ["off", true, ""],
  ] as [ProgressMode, boolean, string][]
) {
  Deno.test(`showProgress() in mode ${mode} ignores whether stderr is a terminal`, async () => {
    const clock = createManualClock();
    const io = capture(terminal);
    const stop = showProgress(migration(), io, { clock, format, mode });
    if (mode !== "off") await tick(clock, mode === "tty" ? 200 : 5000);
    stop();
    assert.equal(io.err, expected);
  });
}
