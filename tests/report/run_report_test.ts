import assert from "node:assert/strict";
import { QmpClient } from "../../mod.ts";
import { main } from "../../cli.ts";
import { capture } from "../cli/_cli.ts";

Deno.test("run --report draws the migration the guest made over QMP", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const io = capture();
    const listening = Promise.withResolvers<string>();
    const writeErr = io.writeErr;
    io.writeErr = (text: string) => {
      writeErr(text);
      const address = /QMP monitor at (\S+)/.exec(text)?.[1];
      if (address) listening.resolve(address);
    };
    const running = main([
      "run",
      "--qmp",
      "tcp:127.0.0.1:0",
      "--ram",
      "8MiB",
      "--prefill",
      "--report",
      `${dir}/run.svg`,
    ], io);
    const qmp = await QmpClient.connect(await listening.promise);
    await qmp.execute("migrate-set-parameters", { "max-bandwidth": 8 << 20 });
    await qmp.execute("migrate", { uri: `exec:cat > ${dir}/stream.mig` });
    while (
      (await qmp.execute<{ status: string }>("query-migrate")).status !==
        "completed"
    ) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await qmp.execute("quit");
    await qmp.close();
    assert.equal(await running, 0, io.err);
    assert.match(io.err, /report written to .*run\.svg/);
    const svg = await Deno.readTextFile(`${dir}/run.svg`);
    assert.match(svg, />livemig run</);
    assert.match(
      svg,
      />completed after [\d.]+ s · downtime \d+ ms \(limit 300 ms\)/,
    );
    assert.match(svg, />active</);
    // Time starts with the migration, not with the guest.
    assert.match(svg, /<polyline[^>]*points="80,/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
