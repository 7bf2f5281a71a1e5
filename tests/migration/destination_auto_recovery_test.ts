import assert from "node:assert/strict";
import {
  DestinationAutoRecovery,
  type IncomingOptions,
  type Transport,
  type TransportListener,
} from "../../mod.ts";

/** A stand-in destination: dispatches status events, records recover(). */
function fakeDestination() {
  const recovered: { transport: Transport; options: IncomingOptions }[] = [];
  let onRecover = () => {};
  const destination = Object.assign(new EventTarget(), {
    recover(transport: Transport, options: IncomingOptions = {}) {
      recovered.push({ transport, options });
      onRecover();
    },
  });
  return {
    destination,
    recovered,
    moveTo(status: string) {
      destination.dispatchEvent(
        new CustomEvent("status", { detail: { status } }),
      );
    },
    nextRecover(): Promise<void> {
      return new Promise((resolve) => (onRecover = resolve));
    },
  };
}

/** A stand-in listener whose accept() yields numbered fake transports. */
function fakeListener(address: string) {
  let accepted = 0;
  const listener = {
    address,
    closed: 0,
    accept() {
      return Promise.resolve({ description: `#${++accepted}` } as Transport);
    },
    close() {
      listener.closed++;
      return Promise.resolve();
    },
  };
  return listener;
}

function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("DestinationAutoRecovery listens, accepts and recovers when the destination pauses in postcopy", async () => {
  const fake = fakeDestination();
  const listener = fakeListener("tcp:127.0.0.1:4445");
  const listened: string[] = [];
  const waiting: string[] = [];
  const recovery = new DestinationAutoRecovery(
    fake.destination,
    "tcp:127.0.0.1:0",
    {
      listen: (uri) => {
        listened.push(uri);
        return Promise.resolve(listener as TransportListener);
      },
      onWaiting: (address) => waiting.push(address),
    },
  );
  const recovered = fake.nextRecover();
  fake.moveTo("postcopy-paused");
  await recovered;
  assert.deepEqual(listened, ["tcp:127.0.0.1:0"]);
  assert.deepEqual(waiting, ["tcp:127.0.0.1:4445"]);
  const { transport, options } = fake.recovered[0]!;
  assert.equal(transport.description, "#1");
  // The postcopy-preempt channel is the next connection on the same listener.
  assert.equal((await options.accept!()).description, "#2");
  await recovery.stop();
  assert.equal(listener.closed, 1);
});

Deno.test("DestinationAutoRecovery listens once and recovers at every pause", async () => {
  const fake = fakeDestination();
  const listener = fakeListener("unix:/run/r.sock");
  let listens = 0;
  const recovery = new DestinationAutoRecovery(
    fake.destination,
    "unix:/run/r.sock",
    {
      listen: () => {
        listens++;
        return Promise.resolve(listener as TransportListener);
      },
    },
  );
  for (let pause = 0; pause < 2; pause++) {
    const recovered = fake.nextRecover();
    fake.moveTo("postcopy-paused");
    await recovered;
    fake.moveTo("postcopy-recover");
    fake.moveTo("postcopy-active");
  }
  await recovery.stop();
  assert.equal(listens, 1);
  assert.deepEqual(fake.recovered.map((r) => r.transport.description), [
    "#1",
    "#2",
  ]);
});

Deno.test("DestinationAutoRecovery reports a failed listen and tries again at the next pause", async () => {
  const fake = fakeDestination();
  const errors: unknown[] = [];
  let listens = 0;
  const recovery = new DestinationAutoRecovery(
    fake.destination,
    "tcp:127.0.0.1:4445",
    {
      listen: () =>
        ++listens === 1
          ? Promise.reject(new Error("Address in use"))
          : Promise.resolve(
            fakeListener("tcp:127.0.0.1:4445") as TransportListener,
          ),
      onError: (error) => errors.push(error),
    },
  );
  fake.moveTo("postcopy-paused");
  await turn();
  assert.deepEqual(errors.map((e) => (e as Error).message), [
    "Address in use",
  ]);
  assert.deepEqual(fake.recovered, []);
  const recovered = fake.nextRecover();
  fake.moveTo("postcopy-paused");
  await recovered;
  await recovery.stop();
  assert.equal(listens, 2);
  assert.equal(fake.recovered.length, 1);
});

Deno.test("DestinationAutoRecovery ignores other statuses and pauses after stop()", async () => {
  const fake = fakeDestination();
  let listens = 0;
  const recovery = new DestinationAutoRecovery(
    fake.destination,
    "tcp:127.0.0.1:4445",
    {
      listen: () => {
        listens++;
        return Promise.resolve(
          fakeListener("tcp:127.0.0.1:4445") as TransportListener,
        );
      },
    },
  );
  for (const status of ["active", "postcopy-active", "completed"]) {
    fake.moveTo(status);
  }
  await recovery.stop();
  fake.moveTo("postcopy-paused");
  await turn();
  assert.equal(listens, 0);
  assert.deepEqual(fake.recovered, []);
});

Deno.test("DestinationAutoRecovery does not report the wait that stop() ends", async () => {
  const fake = fakeDestination();
  const errors: unknown[] = [];
  const accepting = Promise.withResolvers<void>();
  const recovery = new DestinationAutoRecovery(
    fake.destination,
    "tcp:127.0.0.1:4445",
    {
      listen: () => {
        let closed = () => {};
        return Promise.resolve({
          address: "tcp:127.0.0.1:4445",
          accept() {
            accepting.resolve();
            return new Promise<Transport>((_, reject) =>
              closed = () => reject(new Error("the listener is closed"))
            );
          },
          close() {
            closed();
            return Promise.resolve();
          },
        });
      },
      onError: (error) => errors.push(error),
    },
  );
  fake.moveTo("postcopy-paused");
  await accepting.promise;
  await recovery.stop();
  await turn();
  assert.deepEqual(errors, []);
});
