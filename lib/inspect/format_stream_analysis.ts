import { escapeUntrustedText as escape } from "../bytes/escape_untrusted_text.ts";
import type {
  DeviceAnalysis,
  StreamAnalysis,
} from "./analyze_migration_stream.ts";

/**
 * Formats a {@linkcode StreamAnalysis} as the human summary `analyze`
 * prints: header, machine, commands, sections, RAM per block, devices,
 * vmdesc. Names that come from the stream (machine, capabilities, blocks,
 * devices) are printed escaped (see {@linkcode escapeUntrustedText}), so a
 * crafted stream cannot send escape sequences to the terminal.
 *
 * @example Usage
 * ```ts
 * import { analyzeMigrationStream, encodeMigrationRecords, formatStreamAnalysis } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMigrationRecords([{ type: "header", version: 3 }, { type: "eof" }]);
 * const { analysis } = await analyzeMigrationStream(ReadableStream.from([bytes]), { decoder: { vmdesc: false } });
 * assert.match(formatStreamAnalysis(analysis), /^QEMU migration stream, version 3, 9 bytes/);
 * ```
 *
 * @param analysis The analysis.
 * @returns The summary, lines ending in `\n`.
 */
export function formatStreamAnalysis(analysis: StreamAnalysis): string {
  return [
    ...headerLines(analysis),
    ...ramLines(analysis.ram),
    ...deviceLines(analysis.devices),
    ...trailerLines(analysis),
  ].join("\n") + "\n";
}

/** Format, version, size, machine, capabilities, commands, sections. */
function headerLines(analysis: StreamAnalysis): string[] {
  const commands = Object.entries(analysis.commands).map(([name, count]) =>
    name === "PING"
      ? `PING ×${count} (${analysis.pings.join(", ")})`
      : `${name} ×${count}`
  );
  const s = analysis.sections;
  return [
    `QEMU ${
      analysis.format === "mapped-ram" ? "mapped-ram file" : "migration stream"
    }, version ${analysis.version ?? "?"}, ${analysis.bytes} bytes`,
    `machine       ${
      analysis.machine === null
        ? "(no CONFIGURATION)"
        : escape(analysis.machine)
    }, page size ${analysis["page-size"]}`,
    `capabilities  ${
      analysis.capabilities.length
        ? analysis.capabilities.map(escape).join(", ")
        : "(none)"
    }`,
    `commands      ${commands.length ? commands.join(", ") : "(none)"}`,
    `sections      ${s.start} START, ${s.part} PART, ${s.end} END, ${s.full} FULL, ${s.footer} footers`,
  ];
}

/** The RAM totals, then a table of the blocks when there are any. */
function ramLines(ram: StreamAnalysis["ram"]): string[] {
  const lines = [
    `RAM           ${ram.total} bytes in ${ram.blocks.length} blocks: ${ram.zero} zero, ${ram.normal} normal, ${ram.xbzrle} xbzrle${
      ram.compressed ? `, ${ram.compressed} compressed` : ""
    } pages; ${ram.eos} EOS, ${ram.continue} with CONTINUE`,
  ];
  if (ram.blocks.length === 0) return lines;
  const names = ram.blocks.map((b) => escape(b.name));
  const width = Math.max(5, ...names.map((name) => name.length));
  lines.push(
    `  ${"block".padEnd(width)}  ${"size".padStart(11)}  ${
      "zero".padStart(8)
    }  ${"normal".padStart(8)}  ${"xbzrle".padStart(8)}`,
  );
  for (const [i, block] of ram.blocks.entries()) {
    lines.push(
      `  ${names[i]!.padEnd(width)}  ${String(block.size).padStart(11)}  ${
        String(block.zero).padStart(8)
      }  ${String(block.normal).padStart(8)}  ${
        String(block.xbzrle).padStart(8)
      }${block.compressed ? `  (${block.compressed} compressed)` : ""}`,
    );
  }
  return lines;
}

/** The device sections with their sizes, when there are any. */
function deviceLines(devices: DeviceAnalysis[]): string[] {
  if (devices.length === 0) return [];
  const total = devices.reduce((sum, d) => sum + d.size, 0);
  const names = devices.map((d) => `${escape(d.name)} (${d["instance-id"]})`);
  const width = Math.max(4, ...names.map((name) => name.length));
  return [
    `devices       ${devices.length} sections, ${total} bytes of state`,
    ...devices.map((device, i) =>
      `  ${names[i]!.padEnd(width)}  v${String(device.version).padEnd(3)} ${
        String(device.size).padStart(7)
      } bytes`
    ),
  ];
}

/** Device tail, EOF, vmdesc and the XBZRLE check. */
function trailerLines(analysis: StreamAnalysis): string[] {
  const lines: string[] = [];
  const tail = analysis["device-tail"];
  if (tail) {
    lines.push(
      `device tail   ${tail.bytes} bytes at offset ${tail.offset}, ${
        tail.validated ? "walked through the vmdesc" : "not walked (no vmdesc)"
      }`,
    );
  }
  lines.push(`eof           ${analysis.eof ? "yes" : "no"}`);
  lines.push(
    `vmdesc        ${
      analysis.vmdesc
        ? `${analysis.vmdesc.bytes} bytes, ${analysis.vmdesc.devices} devices`
        : "absent"
    }`,
  );
  const check = analysis["check-xbzrle"];
  if (check) {
    lines.push(
      `check-xbzrle  ${check.identical} of ${check.records} XBZRLE records re-encode byte-identically`,
    );
  }
  return lines;
}
