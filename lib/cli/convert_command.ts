import {
  convertMappedRamToStream,
  convertStreamToMappedRam,
  isMappedRamFile,
  openRandomAccessFile,
  StreamFormatError,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatJson } from "./format_json.ts";
import { isSameFile } from "./is_same_file.ts";
import { replaceFile } from "./replace_file.ts";
import { UsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig convert IN OUT --to mapped-ram|stream

Converts a QEMU migration stream file to a mapped-ram file (QEMU 10.0's
layout: pages at fixed offsets, a written-pages bitmap per block) or a
mapped-ram file back to a stream that QEMU 7.2 can load (only records 7.2
knows). RAM ends up identical; device state is carried across as is.
OUT is written to a temporary file beside it and renamed once complete, so
a failed conversion leaves an earlier OUT as it was; OUT may not be IN.

Options:
  --to FORMAT          mapped-ram or stream (required)
  --json               Print what was converted as JSON (last line)
  -h, --help           Show this help

Exit status: 0 converted, 1 bad input or I/O error, 2 usage error (OUT is
IN included).
`;

/**
 * `livemig convert IN OUT --to mapped-ram|stream`: converts a stream file
 * to a mapped-ram file or back.
 *
 * @example Usage
 * ```ts
 * import { CONVERT_COMMAND } from "./convert_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * const stream = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url).pathname;
 * const target = await Deno.makeTempFile({ suffix: ".mr" });
 * assert.equal(await CONVERT_COMMAND.run([stream, target, "--to", "mapped-ram", "--json"], io), 0);
 * assert.equal(JSON.parse(out).to, "mapped-ram");
 * await Deno.remove(target);
 * ```
 */
export const CONVERT_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: { to: { type: "string" }, json: { type: "boolean" } },
  positionals: [{ name: "IN" }, { name: "OUT" }],
  wrongCount: (count) => `convert takes IN and OUT: received ${count} paths`,
  async run({ flags, positionals: [input, output] }, io) {
    if (flags.to !== "mapped-ram" && flags.to !== "stream") {
      throw new UsageError(
        flags.to === undefined
          ? "convert needs --to mapped-ram or --to stream"
          : `--to accepts mapped-ram or stream: received "${flags.to}"`,
        USAGE,
      );
    }
    if (await isSameFile(input, output)) {
      throw new UsageError(
        `Cannot convert "${input}" into "${output}": they are the same file, which would be lost; choose another OUT`,
        USAGE,
      );
    }
    const json = flags.json ?? false;
    if (flags.to === "mapped-ram") {
      await toMappedRam(input, output, { io, json });
    } else {
      await toStream(input, output, { io, json });
    }
    return 0;
  },
});

/** Where {@linkcode toMappedRam} and {@linkcode toStream} report. */
interface Report {
  io: CliIo;
  json: boolean;
}

async function toMappedRam(
  input: string,
  output: string,
  { io, json }: Report,
): Promise<void> {
  const result = await replaceFile(output, async (temp) => {
    const source = await Deno.open(input);
    const target = await openRandomAccessFile(temp, { truncate: true });
    try {
      return await convertStreamToMappedRam(source.readable, target);
    } finally {
      await target.close();
    }
  });
  io.writeOut(
    json
      ? formatJson({ to: "mapped-ram", ...result }) + "\n"
      : `wrote ${output}: mapped-ram, ${result.blocks.length} blocks, ${result.storedPages} pages stored, ${result.zeroPages} zero pages, ${result.size} bytes\n`,
  );
}

async function toStream(
  input: string,
  output: string,
  { io, json }: Report,
): Promise<void> {
  const source = await openRandomAccessFile(input, { readOnly: true });
  try {
    if (!await isMappedRamFile(source)) {
      throw new StreamFormatError(
        `Cannot convert "${input}" to a stream: it is not a mapped-ram file`,
        { offset: 0 },
      );
    }
    const result = await replaceFile(output, async (temp) => {
      const target = await Deno.open(temp, { write: true, truncate: true });
      return await convertMappedRamToStream(source, target.writable);
    });
    io.writeOut(
      json
        ? formatJson({ to: "stream", ...result }) + "\n"
        : `wrote ${output}: stream, ${result.blocks.length} blocks, ${result.pages} pages (${result.zeroPages} zero), ${result.bytes} bytes\n`,
    );
  } finally {
    await source.close();
  }
}
