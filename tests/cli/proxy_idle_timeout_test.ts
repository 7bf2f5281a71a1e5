import assert from "node:assert/strict";
import { connectTransport, listenTransport } from "../../mod.ts";
import { run, start } from "./_cli.ts";

Deno.test("cli proxy --idle-timeout fails a source that connects and sends nothing", async () => {
  const target = await listenTransport("tcp:127.0.0.1:0");
  const accepted = target.accept();
  const proxy = start([
    "proxy",
    "tcp:127.0.0.1:0",
    target.address,
    "--idle-timeout",
    "200ms",
    "--json",
  ]);
  try {
    const [, address] = await proxy.waitForErr(
      /waiting for a migration at (tcp:\S+),/,
    );
    const silent = await connectTransport(address!);
    const { code, out, err } = await proxy.done;
    assert.equal(code, 1);
    assert.equal(JSON.parse(out).status, "failed");
    assert.match(err, /nothing arrived for 200 ms \(idle timeout\)/);
    await silent.close();
    await (await accepted).close();
  } finally {
    await target.close();
  }
});

Deno.test("cli proxy refuses a bad --idle-timeout with exit 2", async () => {
  const { code, err } = await run([
    "proxy",
    "tcp:127.0.0.1:0",
    "tcp:127.0.0.1:1",
    "--idle-timeout",
    "later",
  ]);
  assert.equal(code, 2);
  assert.match(err, /--idle-timeout "later"/);
});
