import assert from "node:assert/strict";
import { QmpError } from "../../lib/qmp/qmp_error.ts";
import { QmpServer } from "../../lib/qmp/qmp_server.ts";
import { QmpClient } from "../../lib/qmp/qmp_client.ts";
import { listenTransport } from "../../lib/transport/open_transport.ts";
import { rawClient } from "./_raw_client.ts";

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "livemig"}, "capabilities": ["oob"]}}';

function negotiate(
  client: ReturnType<typeof rawClient>,
  args = "",
): Promise<void> {
  return (async () => {
    assert.equal(await client.line(), GREETING);
    await client.send(`{"execute": "qmp_capabilities"${args}}\n`);
    assert.equal(await client.line(), '{"return": {}}');
  })();
}

Deno.test("QmpServer greets as QEMU 7.2 and wants qmp_capabilities first", async () => {
  const server = new QmpServer({ commands: { stop: { run() {} } } });
  const client = rawClient(server);
  assert.equal(await client.line(), GREETING);
  await client.send('{"execute": "stop", "id": 1}\n');
  assert.equal(
    await client.line(),
    `{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`,
  );
  await client.send('{"execute": "qmp_capabilities", "id": 2}\n');
  assert.equal(await client.line(), '{"return": {}, "id": 2}');
  await client.send('{"execute": "stop", "id": [3, {"x": null}]}\n');
  assert.equal(await client.line(), '{"return": {}, "id": [3, {"x": null}]}');
  await client.send('{"execute": "qmp_capabilities"}\n');
  assert.equal(
    await client.line(),
    '{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}',
  );
  await client.close();
});

Deno.test("QmpServer answers query-version and query-commands itself", async () => {
  const server = new QmpServer({
    commands: { stop: { run() {} } },
    version: { qemu: { major: 9, minor: 1, micro: 3 }, package: "x" },
  });
  const client = rawClient(server);
  await client.line();
  await client.send('{"execute": "qmp_capabilities"}\n');
  await client.line();
  await client.send('{"execute": "query-version"}\n');
  assert.equal(
    await client.line(),
    '{"return": {"qemu": {"micro": 3, "minor": 1, "major": 9}, "package": "x"}}',
  );
  await client.send('{"execute": "query-commands"}\n');
  assert.deepEqual(await client.json(), {
    return: [
      { name: "qmp_capabilities" },
      { name: "query-version" },
      { name: "query-commands" },
      { name: "stop" },
    ],
  });
  await client.close();
});

Deno.test("QmpServer sends events to negotiated clients only, with the injected clock", async () => {
  let now = 1_796_336_707_852.903;
  const server = new QmpServer({ commands: {}, now: () => now });
  const early = rawClient(server);
  const late = rawClient(server);
  await negotiate(early);
  assert.equal(await late.line(), GREETING);
  server.emit("STOP");
  now += 1000.5;
  server.emit("MIGRATION", { status: "setup" });
  assert.equal(
    await early.line(),
    '{"timestamp": {"seconds": 1796336707, "microseconds": 852903}, "event": "STOP"}',
  );
  assert.equal(
    await early.line(),
    '{"timestamp": {"seconds": 1796336708, "microseconds": 853403}, "event": "MIGRATION", "data": {"status": "setup"}}',
  );
  assert.ok(await late.quiet(100));
  await late.send('{"execute": "qmp_capabilities"}\n');
  assert.equal(await late.line(), '{"return": {}}');
  server.emit("RESUME");
  assert.deepEqual(await late.json(), { event: "RESUME" });
  assert.deepEqual(await early.json(), { event: "RESUME" });
  await Promise.all([early.close(), late.close()]);
});

Deno.test("QmpServer serves clients at once by default; a broken one disturbs nobody", async () => {
  const server = new QmpServer({
    commands: {
      echo: { arguments: [{ name: "x", type: "int" }], run: (args) => args.x },
    },
  });
  const a = rawClient(server);
  const b = rawClient(server);
  await Promise.all([negotiate(a), negotiate(b)]);
  assert.equal(server.clientCount, 2);
  await a.send(
    '{"execute": "echo", "arguments": {"x": 1}}{"foo\n\u0000{"execute"',
  );
  await b.send('{"execute": "echo", "arguments": {"x": 2}}\n');
  assert.equal(await b.line(), '{"return": 2}');
  assert.equal(await a.line(), '{"return": 1}');
  assert.equal(
    await a.line(),
    `{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\"foo\\n'"}}`,
  );
  await a.close();
  server.emit("STOP");
  assert.deepEqual(await b.json(), { event: "STOP" });
  await b.send('{"execute": "echo", "arguments": {"x": 3}}\n');
  assert.equal(await b.line(), '{"return": 3}');
  await b.close();
  assert.equal(server.clientCount, 0);
});

Deno.test("QmpServer with one-at-a-time greets the next client when the first leaves, as QEMU", async () => {
  const server = new QmpServer({ commands: {}, clients: "one-at-a-time" });
  const first = rawClient(server);
  const second = rawClient(server);
  assert.equal(await first.line(), GREETING);
  assert.ok(await second.quiet(200));
  await first.close();
  assert.equal(await second.line(), GREETING);
  await second.close();
});

Deno.test("QmpServer runs exec-oob commands ahead of queued ones once oob is enabled", async () => {
  const slow = Promise.withResolvers<void>();
  const server = new QmpServer({
    commands: {
      slow: { run: async () => await slow.promise },
      "migrate-pause": { allowOob: true, run: () => "paused" },
      "query-status": { run: () => "status" },
    },
  });
  const client = rawClient(server);
  await negotiate(client, ', "arguments": {"enable": ["oob"]}');
  await client.send(
    '{"execute": "slow", "id": 1}{"execute": "query-status", "id": 2}{"exec-oob": "migrate-pause", "id": 3}{"exec-oob": "query-status", "id": 4}\n',
  );
  assert.equal(await client.line(), '{"return": "paused", "id": 3}');
  assert.equal(
    await client.line(),
    '{"id": 4, "error": {"class": "GenericError", "desc": "The command query-status does not support OOB"}}',
  );
  slow.resolve();
  assert.equal(await client.line(), '{"return": {}, "id": 1}');
  assert.equal(await client.line(), '{"return": "status", "id": 2}');
  await client.close();
});

Deno.test("QmpServer refuses exec-oob when the client did not enable oob", async () => {
  const server = new QmpServer({
    commands: { "migrate-pause": { allowOob: true, run() {} } },
  });
  const client = rawClient(server);
  await negotiate(client);
  await client.send('{"exec-oob": "migrate-pause", "id": 1}\n');
  assert.equal(
    await client.line(),
    `{"id": 1, "error": {"class": "GenericError", "desc": "QMP input member 'exec-oob' is unexpected"}}`,
  );
  await client.close();
});

Deno.test("QmpServer answers a command's errors: QmpError as given, others as GenericError", async () => {
  const server = new QmpServer({
    commands: {
      typed: {
        run() {
          throw new QmpError({
            class: "DeviceNotFound",
            desc: "No such device",
          });
        },
      },
      broken: {
        run() {
          throw new RangeError("Cannot do that");
        },
      },
    },
  });
  const client = rawClient(server);
  await negotiate(client);
  await client.send('{"execute": "typed"}{"execute": "broken"}\n');
  assert.equal(
    await client.line(),
    '{"error": {"class": "DeviceNotFound", "desc": "No such device"}}',
  );
  assert.equal(
    await client.line(),
    '{"error": {"class": "GenericError", "desc": "Cannot do that"}}',
  );
  await client.close();
});

Deno.test("QmpServer aborts a command's signal when its client disconnects", async () => {
  const aborted = Promise.withResolvers<unknown>();
  const server = new QmpServer({
    commands: {
      wait: {
        run: (_args, { signal }) =>
          new Promise((_, reject) => {
            signal.addEventListener("abort", () => {
              aborted.resolve(signal.reason);
              reject(signal.reason);
            });
          }),
      },
    },
  });
  const client = rawClient(server);
  await negotiate(client);
  await client.send('{"execute": "wait"}\n');
  await new Promise((resolve) => setTimeout(resolve, 20));
  await client.close();
  assert.ok(await aborted.promise instanceof Error);
});

Deno.test("QmpServer serves a TCP listener until closed", async () => {
  const server = new QmpServer({ commands: { ping: { run: () => "pong" } } });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const serving = server.serve(listener);
  const client = await QmpClient.connect(listener.address);
  assert.equal(await client.execute("ping"), "pong");
  const second = await QmpClient.connect(listener.address);
  assert.equal(await second.execute("ping"), "pong");
  await server.close();
  await serving;
  await assert.rejects(client.execute("ping"));
  await Promise.all([client.close(), second.close()]);
});

const SOCKET = "/tmp/livemig-test.sock";
const UNIX_GRANTED = Deno.permissions.querySync({
  name: "net",
  host: `unix:${SOCKET}`,
}).state === "granted";

Deno.test({
  name: "QmpServer serves a unix socket, one client after another",
  ignore: !UNIX_GRANTED,
  async fn() {
    const server = new QmpServer({
      commands: { ping: { run: () => "pong" } },
      clients: "one-at-a-time",
    });
    const listener = await listenTransport(`unix:${SOCKET}`);
    const controller = new AbortController();
    const serving = server.serve(listener, { signal: controller.signal });
    for (let i = 0; i < 3; i++) {
      const client = await QmpClient.connect(`unix:${SOCKET}`);
      assert.equal(await client.execute("ping"), "pong");
      await client.close();
    }
    controller.abort();
    await serving;
    await server.close();
  },
});
