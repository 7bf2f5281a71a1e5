/**
 * Builds life.wasm from life.wat with wabt from npm (used for this build
 * only: the library, the CLI and the tests use the committed life.wasm).
 *
 * Run with `deno task wasm:build`.
 */
import wabt from "npm:wabt@1.0.39";

const here = new URL("./", import.meta.url);
const source = await Deno.readTextFile(new URL("life.wat", here));
const tools = await wabt();
const module = tools.parseWat("life.wat", source);
module.validate();
const { buffer } = module.toBinary({});
await Deno.writeFile(new URL("life.wasm", here), buffer);
module.destroy();
await Deno.stderr.write(
  new TextEncoder().encode(`life.wasm: ${buffer.byteLength} bytes\n`),
);
