import assert from "node:assert/strict";
import { SourceAutoRecovery, type Transport } from "../../mod.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";

/** A stand-in source: dispatches status events, records resume() calls. */
function fakeSource() {
  const resumed: Transport[] = [];
  let onResume = () => {};
  const source = Object.assign(new EventTarget(), {
    resume(transport: Transport) {
      resumed.push(transport);
      onResume();
    },
  });
  return {
    source,
    resumed,
    moveTo(status: string) {
      source.dispatchEvent(new CustomEvent("status", { detail: { status } }));
    },
    /** Resolves at the next resume(). */
    nextResume(): Promise<void> {
      return new Promise((resolve) => (onResume = resolve));
    },
  };
}

function fakeTransport(name: string): Transport {
  return { description: name } as Transport;
}

function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("SourceAutoRecovery resumes on a new connection when the source pauses in postcopy", async () => {
  const fake = fakeSource();
  const clock = createFakeClock();
  const uris: string[] = [];
  let pauses = 0;
  const recovery = new SourceAutoRecovery(fake.source, "tcp:10.0.0.2:4445", {
    clock,
    onPaused: () => pauses++,
    connect: (uri) => {
      uris.push(uri);
      return Promise.resolve(fakeTransport("first"));
    },
  });
  const resumed = fake.nextResume();
  fake.moveTo("postcopy-paused");
  await resumed;
  recovery.stop();
  assert.equal(pauses, 1);
  assert.deepEqual(uris, ["tcp:10.0.0.2:4445"]);
  assert.deepEqual(fake.resumed.map((t) => t.description), ["first"]);
  assert.deepEqual(clock.slept, []);
});

Deno.test("SourceAutoRecovery retries with waits doubling from 100 ms to 2 s", async () => {
  const fake = fakeSource();
  const clock = createFakeClock();
  let attempts = 0;
  const recovery = new SourceAutoRecovery(fake.source, "tcp:10.0.0.2:4445", {
    clock,
    connect: () =>
      ++attempts <= 7
        ? Promise.reject(new Error("Connection refused"))
        : Promise.resolve(fakeTransport("eighth")),
  });
  const resumed = fake.nextResume();
  fake.moveTo("postcopy-paused");
  await resumed;
  recovery.stop();
  assert.equal(attempts, 8);
  assert.deepEqual(clock.slept, [100, 200, 400, 800, 1600, 2000, 2000]);
});

Deno.test("SourceAutoRecovery heals every pause, not only the first", async () => {
  const fake = fakeSource();
  let attempts = 0;
  const recovery = new SourceAutoRecovery(fake.source, "unix:/run/r.sock", {
    clock: createFakeClock(),
    connect: () => Promise.resolve(fakeTransport(`#${++attempts}`)),
  });
  for (let pause = 0; pause < 2; pause++) {
    const resumed = fake.nextResume();
    fake.moveTo("postcopy-paused");
    await resumed;
    fake.moveTo("postcopy-recover");
    fake.moveTo("postcopy-active");
  }
  recovery.stop();
  assert.deepEqual(fake.resumed.map((t) => t.description), ["#1", "#2"]);
});

Deno.test("SourceAutoRecovery ignores other statuses and pauses after stop()", async () => {
  const fake = fakeSource();
  let attempts = 0;
  const recovery = new SourceAutoRecovery(fake.source, "tcp:10.0.0.2:4445", {
    clock: createFakeClock(),
    connect: () => {
      attempts++;
      return Promise.resolve(fakeTransport("unused"));
    },
  });
  for (const status of ["active", "postcopy-active", "failed"]) {
    fake.moveTo(status);
  }
  recovery.stop();
  fake.moveTo("postcopy-paused");
  await turn();
  assert.equal(attempts, 0);
  assert.deepEqual(fake.resumed, []);
});

Deno.test("SourceAutoRecovery stop() ends an attempt under way after its wait", async () => {
  const fake = fakeSource();
  const clock = createFakeClock();
  let attempts = 0;
  let stopAtThird = () => {};
  const recovery = new SourceAutoRecovery(fake.source, "tcp:10.0.0.2:4445", {
    clock,
    connect: () => {
      if (++attempts === 3) stopAtThird();
      return Promise.reject(new Error("Connection refused"));
    },
  });
  stopAtThird = () => recovery.stop();
  fake.moveTo("postcopy-paused");
  await turn();
  assert.equal(attempts, 3);
  assert.deepEqual(clock.slept, [100, 200, 400]);
  assert.deepEqual(fake.resumed, []);
});

Deno.test("SourceAutoRecovery closes the connection and stops when the source no longer waits to resume", async () => {
  const source = Object.assign(new EventTarget(), {
    resume(): void {
      throw new TypeError(
        'Cannot resume migration in "postcopy-paused": it must be in "postcopy-paused"',
      );
    },
  });
  const clock = createFakeClock();
  let connects = 0;
  const closed: string[] = [];
  const recovery = new SourceAutoRecovery(source, "tcp:10.0.0.2:4445", {
    clock,
    connect: () => {
      connects++;
      return Promise.resolve({
        description: `connection ${connects}`,
        close: () => {
          closed.push(`connection ${connects}`);
          return Promise.resolve();
        },
      } as Transport);
    },
  });
  source.dispatchEvent(
    new CustomEvent("status", { detail: { status: "postcopy-paused" } }),
  );
  for (let i = 0; i < 10; i++) await turn();
  recovery.stop();
  assert.equal(connects, 1);
  assert.deepEqual(closed, ["connection 1"]);
  assert.deepEqual(clock.slept, []);
});
