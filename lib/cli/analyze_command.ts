import {
  analyzeMappedRamFile,
  analyzeMigrationStream,
  formatStreamAnalysis,
  isMappedRamFile,
  openRandomAccessFile,
  parseSize,
  ramBlockFileName,
  type RamImage,
  type StreamAnalysisResult,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatJson } from "./format_json.ts";
import { asUsageError, UsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig analyze FILE [options]

Summarise a QEMU migration stream: header, machine, commands, sections,
per RAM block its size and its zero / normal / xbzrle page counts, device
sections walked through the vmdesc trailer. Mapped-ram files (QEMU 9.0+
file layout) are recognised and summarised too.

Options:
  --offset N           Where the stream starts in FILE, in bytes (as in a
                       file:PATH,offset=N URI; default 0)
  --json               Print the summary as one JSON object (last line)
  --extract-ram DIR    Write each RAM block's final content to DIR/<name>.bin
                       (<name> = block idstr, characters outside
                       [A-Za-z0-9._-] replaced by _)
  --dump state         Print device fields decoded through the vmdesc
  --check-xbzrle       Re-encode every XBZRLE record from the page it patched
                       and count byte-identical ones (exit 1 if any differs)
  -h, --help           Show this help

Exit status: 0 valid stream, 1 stream or I/O error, 2 usage error.
`;

/**
 * `livemig analyze FILE`: summarises a QEMU migration stream or mapped-ram
 * file, as QEMU's `scripts/analyze-migration.py` does; exits 1 when the
 * file does not decode or, with `--check-xbzrle`, when a delta differs
 * from what QEMU would write.
 *
 * @example Usage
 * ```ts
 * import { ANALYZE_COMMAND } from "./analyze_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * const stream = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url).pathname;
 * assert.equal(await ANALYZE_COMMAND.run([stream, "--json"], io), 0);
 * assert.equal(JSON.parse(out).machine, "pc-i440fx-7.2");
 * ```
 */
export const ANALYZE_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    json: { type: "boolean" },
    "extract-ram": { type: "string" },
    dump: { type: "string" },
    "check-xbzrle": { type: "boolean" },
    offset: { type: "string" },
  },
  positionals: [{ name: "FILE" }],
  wrongCount: (count) =>
    count === 0
      ? "analyze needs a FILE"
      : `analyze takes one FILE: received ${count}`,
  async run({ flags, positionals: [path] }, io) {
    if (flags.dump !== undefined && flags.dump !== "state") {
      throw new UsageError(
        `--dump accepts only "state": received "${flags.dump}"`,
        USAGE,
      );
    }
    const offset = asUsageError(
      USAGE,
      () => parseSize(flags.offset ?? "0", "--offset"),
    );
    const { analysis, ram, state } = await analyze(path, io, {
      offset,
      keepRam: flags["extract-ram"] !== undefined,
      dumpState: flags.dump === "state",
      checkXbzrle: flags["check-xbzrle"] ?? false,
    });
    const dir = flags["extract-ram"];
    const written = dir !== undefined && ram ? await extractRam(ram, dir) : [];
    if (flags.json) {
      const json: Record<string, unknown> = { ...analysis };
      if (state) json.state = state;
      if (dir !== undefined) json["extracted"] = written;
      io.writeOut(formatJson(json) + "\n");
    } else {
      io.writeOut(formatStreamAnalysis(analysis));
      for (const target of written) io.writeOut(`wrote ${target}\n`);
      if (state) io.writeOut(formatJson(state, 2) + "\n");
    }
    const check = analysis["check-xbzrle"];
    return check && check.identical < check.records ? 1 : 0;
  },
});

/** Reads the file at `path` as a mapped-ram file or else as a stream. */
async function analyze(
  path: string,
  io: CliIo,
  options: {
    offset: number;
    keepRam: boolean;
    dumpState: boolean;
    checkXbzrle: boolean;
  },
): Promise<StreamAnalysisResult> {
  const { checkXbzrle, offset, ...common } = options;
  const progress = io.errIsTerminal
    ? (bytes: number) =>
      io.writeErr(`\ranalyzing ${path}: ${(bytes / 1e6).toFixed(1)} MB`)
    : undefined;
  const shared = { ...common, ...(progress ? { onProgress: progress } : {}) };
  const random = await openRandomAccessFile(path, { readOnly: true });
  try {
    if (await isMappedRamFile(random, { offset })) {
      return await analyzeMappedRamFile(random, { ...shared, offset });
    }
    const file = await Deno.open(path);
    await file.seek(offset, Deno.SeekMode.Start);
    return await analyzeMigrationStream(file.readable, {
      ...shared,
      checkXbzrle,
      decoder: { startOffset: offset },
    });
  } finally {
    await random.close();
    if (progress) io.writeErr("\r\x1b[K");
  }
}

/** Writes each block of `ram` to `dir`; returns the files written. */
async function extractRam(ram: RamImage, dir: string): Promise<string[]> {
  const written: string[] = [];
  await Deno.mkdir(dir, { recursive: true });
  for (const block of ram.blocks) {
    const target = `${dir}/${ramBlockFileName(block.idstr)}`;
    const out = await Deno.open(target, {
      write: true,
      create: true,
      truncate: true,
    });
    try {
      for (const chunk of ram.chunks(block.idstr)) await writeAll(out, chunk);
    } finally {
      out.close();
    }
    written.push(target);
  }
  return written;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.byteLength;) {
    done += await file.write(bytes.subarray(done));
  }
}
