/**
 * The command line with --wasm: run prints the demo's checksum after N
 * steps; migrate to a file and incoming from it continue the program to
 * the same checksum; another module is refused; Wasm flags are checked.
 */
import assert from "node:assert/strict";
import { type CliIo, main } from "../../cli.ts";
import { buildModule, I32 } from "./_wasm_module.ts";

const LIFE = new URL("../../examples/wasm/life.wasm", import.meta.url)
  .pathname;
const STEPS = ["--budget", "32768", "--steps", "3000"];

async function cli(args: string[]) {
  const io: CliIo & { out: string; err: string } = {
    out: "",
    err: "",
    errIsTerminal: false,
    writeOut(text: string) {
      io.out += text;
    },
    writeErr(text: string) {
      io.err += text;
    },
  };
  const code = await main(args, io);
  return { code, out: io.out, err: io.err };
}

function checksumOf(err: string): string {
  const match = /the Wasm program ran 3000 steps: checksum (0x[0-9a-f]{16})/
    .exec(err);
  assert.ok(match, `no checksum in: ${err}`);
  return match[1]!;
}

Deno.test("run --wasm, migrate --wasm and incoming --wasm: the checksum after N steps is the same", async () => {
  const alone = await cli(["run", "--wasm", LIFE, "--init", "2", ...STEPS]);
  assert.equal(alone.code, 0, alone.err);
  const expected = checksumOf(alone.err);
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    const sent = await cli([
      "migrate",
      `file:${path}`,
      "--wasm",
      LIFE,
      "--init",
      "2",
      "--json",
      ...STEPS,
    ]);
    assert.equal(sent.code, 0, sent.err);
    assert.equal(JSON.parse(sent.out).status, "completed");
    const loaded = await cli([
      "incoming",
      `file:${path}`,
      "--wasm",
      LIFE,
      ...STEPS,
    ]);
    assert.equal(loaded.code, 0, loaded.err);
    assert.equal(checksumOf(loaded.err), expected);

    const other = await Deno.makeTempFile({ suffix: ".wasm" });
    await Deno.writeFile(
      other,
      buildModule({
        memory: [1],
        functions: [{ name: "step", params: [I32], code: [] }],
      }),
    );
    const refused = await cli(["incoming", `file:${path}`, "--wasm", other]);
    await Deno.remove(other);
    assert.equal(refused.code, 1);
    assert.match(
      refused.err,
      /carries another Wasm module \(sha256 [0-9a-f]{64}\)/,
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("--wasm flags: a Wasm flag needs --wasm, simulated-guest flags do not go with it", async () => {
  const stray = await cli(["run", "--steps", "3"]);
  assert.equal(stray.code, 2);
  assert.match(stray.err, /--steps needs --wasm FILE/);
  const mixed = await cli([
    "migrate",
    "file:/dev/null",
    "--wasm",
    LIFE,
    "--ram",
    "1MiB",
  ]);
  assert.equal(mixed.code, 2);
  assert.match(
    mixed.err,
    /--ram describes a simulated guest: it does not go with --wasm/,
  );
  const init = await cli([
    "incoming",
    "file:/dev/null",
    "--wasm",
    LIFE,
    "--init",
    "2",
  ]);
  assert.equal(init.code, 2);
  const missing = await cli(["run", "--wasm", "/nonexistent.wasm"]);
  assert.equal(missing.code, 1);
  assert.match(missing.err, /Cannot read --wasm \/nonexistent\.wasm/);
});
