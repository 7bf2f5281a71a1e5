import assert from "node:assert/strict";
import { QmpClient, type QmpEvent } from "../../lib/qmp/qmp_client.ts";
import { QmpConnectionError } from "../../lib/qmp/qmp_connection_error.ts";
import { QmpError } from "../../lib/qmp/qmp_error.ts";
import { QmpServer } from "../../lib/qmp/qmp_server.ts";
import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";

function serve(
  server: QmpServer,
): {
  near: ReturnType<typeof createMemoryTransportPair>[0];
  served: Promise<void>;
} {
  const [near, far] = createMemoryTransportPair();
  return { near, served: server.handle(far) };
}

Deno.test("QmpClient.connect() reads the greeting and negotiates", async () => {
  const server = new QmpServer({ commands: {} });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  assert.deepEqual(client.greeting, {
    QMP: {
      version: { qemu: { micro: 0, minor: 2, major: 7 }, package: "livemig" },
      capabilities: ["oob"],
    },
  });
  assert.deepEqual(await client.execute("query-version"), {
    qemu: { micro: 0, minor: 2, major: 7 },
    package: "livemig",
  });
  await client.close();
  await served;
});

Deno.test("QmpClient.execute() rejects with QEMU's class and desc", async () => {
  const server = new QmpServer({
    commands: {
      "migrate-set-parameters": {
        arguments: [{ name: "downtime-limit", type: "uint64", optional: true }],
        run() {
          throw new QmpError({
            desc:
              "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
          });
        },
      },
    },
  });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  const error = await client.execute("migrate-set-parameters", {
    "downtime-limit": 3000000,
  }).catch((error: unknown) => error);
  assert.ok(error instanceof QmpError);
  assert.equal(error.class, "GenericError");
  assert.equal(error.errorClass, "GenericError");
  assert.equal(error.command, "migrate-set-parameters");
  assert.equal(
    error.desc,
    "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
  );
  await assert.rejects(client.execute("nope"), {
    name: "QmpError",
    class: "CommandNotFound",
    desc: "The command nope has not been found",
  });
  await client.close();
  await served;
});

Deno.test("QmpClient carries 64-bit integers both ways", async () => {
  const server = new QmpServer({
    commands: {
      echo: {
        arguments: [{ name: "value", type: "uint64" }],
        run: (args) => ({ value: args.value }),
      },
    },
  });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  assert.deepEqual(
    await client.execute("echo", { value: 18446744073709551615n }),
    { value: 18446744073709551615n },
  );
  assert.deepEqual(await client.execute("echo", { value: -1 }), {
    value: 18446744073709551615n,
  });
  await client.close();
  await served;
});

Deno.test("QmpClient.events() yields events as they come and ends on close", async () => {
  const server = new QmpServer({ commands: {}, now: () => 1500.25 });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  const first = client.events();
  const second = client.events();
  server.emit("MIGRATION", { status: "setup" });
  server.emit("STOP");
  const seen: QmpEvent[] = [];
  for await (const event of first) {
    seen.push(event);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, [
    {
      event: "MIGRATION",
      data: { status: "setup" },
      timestamp: { seconds: 1, microseconds: 500250 },
    },
    {
      event: "STOP",
      data: {},
      timestamp: { seconds: 1, microseconds: 500250 },
    },
  ]);
  assert.equal((await second.next()).value?.event, "MIGRATION");
  await client.close();
  assert.equal((await second.next()).value?.event, "STOP");
  assert.equal((await second.next()).done, true);
  await served;
});

Deno.test("QmpClient.events() ends when its signal aborts", async () => {
  const server = new QmpServer({ commands: {} });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  const controller = new AbortController();
  const events = client.events({ signal: controller.signal });
  const next = events.next();
  controller.abort();
  assert.equal((await next).done, true);
  await client.close();
  await served;
});

Deno.test("QmpClient.waitForEvent() finds events that came before the call", async () => {
  const server = new QmpServer({ commands: {} });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  server.emit("MIGRATION_PASS", { pass: 1 });
  server.emit("MIGRATION_PASS", { pass: 2 });
  await client.execute("query-version"); // the events have arrived
  const second = await client.waitForEvent(
    "MIGRATION_PASS",
    (event) => event.data.pass === 2,
  );
  assert.equal(second.data.pass, 2);
  assert.equal((await client.waitForEvent("MIGRATION_PASS")).data.pass, 1);
  await assert.rejects(
    client.waitForEvent("MIGRATION_PASS", () => true, 20),
    QmpConnectionError,
  );
  await client.close();
  await served;
});

Deno.test("QmpClient sends out-of-band commands once oob is on", async () => {
  const server = new QmpServer({
    commands: {
      "migrate-pause": { allowOob: true, run: (_, c) => c.outOfBand },
    },
  });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near, { oob: true });
  assert.equal(
    await client.execute("migrate-pause", undefined, { outOfBand: true }),
    true,
  );
  await client.close();
  await served;
});

Deno.test("QmpClient rejects commands after close and when the monitor goes away", async () => {
  const server = new QmpServer({
    commands: { hang: { run: () => new Promise(() => {}) } },
  });
  const { near, served } = serve(server);
  const client = await QmpClient.connect(near);
  const hanging = client.execute("hang");
  await server.close();
  await assert.rejects(hanging, QmpConnectionError);
  await assert.rejects(client.execute("hang"), QmpConnectionError);
  await client.close();
  await client.close();
  await served.catch(() => {});
});

Deno.test("QmpClient gives up when no greeting comes", async () => {
  const [near, far] = createMemoryTransportPair();
  await assert.rejects(
    QmpClient.connect(near, { timeoutMs: 30 }),
    /no greeting within 30 ms/,
  );
  await far.close();
});

Deno.test("QmpClient times a command out", async () => {
  const server = new QmpServer({
    commands: { hang: { run: () => new Promise(() => {}) } },
  });
  const [near, far] = createMemoryTransportPair();
  const served = server.handle(far);
  const client = await QmpClient.connect(near, { commandTimeoutMs: 20 });
  await assert.rejects(client.execute("hang"), /no reply within 20 ms/);
  await client.close();
  await server.close();
  await served;
});

Deno.test("QmpClient talks to a raw monitor that writes CRLF and several lines per chunk", async () => {
  const [near, far] = createMemoryTransportPair();
  const reader = far.readable.getReader();
  const writer = far.writable.getWriter();
  const write = (text: string) => writer.write(new TextEncoder().encode(text));
  const connecting = QmpClient.connect(near);
  await write(
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\r\n',
  );
  const sent = new TextDecoder().decode((await reader.read()).value);
  assert.equal(sent, '{"execute": "qmp_capabilities", "id": 1}\n');
  await write(
    '{"return": {}, "id": 1}\r\n{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n',
  );
  const client = await connecting;
  assert.equal((await client.waitForEvent("STOP")).timestamp.microseconds, 2);
  await client.close();
  reader.releaseLock();
  writer.releaseLock();
  await far.close();
});
