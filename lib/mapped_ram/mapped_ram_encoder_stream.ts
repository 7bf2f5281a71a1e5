import { ByteWriter } from "../bytes/byte_writer.ts";
import type { MappedRamWriterItem } from "./mapped_ram_writer.ts";
import {
  MigrationEncoder,
  type MigrationEncoderOptions,
} from "../wire/migration_encoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";

/** The capability that announces the mapped-ram layout. */
const MAPPED_RAM = "mapped-ram";

/**
 * A stream stage that prepares {@linkcode MigrationRecord} batches for a
 * {@linkcode MappedRamWriter}: every non-RAM record is encoded into stream
 * bytes (`{ type: "stream-bytes" }`), RAM records pass through to be laid
 * out by the writer.
 *
 * It also keeps the file consistent: the CONFIGURATION record gets the
 * `mapped-ram` capability when it lacks it (a loader must know the layout
 * before the block list), and a `{ type: "bitmap-flush" }` goes out right
 * before the EOS of the RAM END section, where QEMU writes the bitmaps.
 *
 * @example Usage
 * ```ts
 * import { MappedRamEncoderStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const batches = await Array.fromAsync(
 *   ReadableStream.from([[
 *     { type: "section-end", sectionId: 2 },
 *     { type: "ram-eos" },
 *     { type: "section-footer", sectionId: 2 },
 *   ] as const]).pipeThrough(new MappedRamEncoderStream()),
 * );
 * assert.deepEqual(batches.flat(), [
 *   { type: "stream-bytes", data: new Uint8Array([0x03, 0, 0, 0, 2]) },
 *   { type: "bitmap-flush" },
 *   { type: "ram-eos" },
 *   { type: "stream-bytes", data: new Uint8Array([0x7e, 0, 0, 0, 2]) },
 * ]);
 * ```
 */
export class MappedRamEncoderStream
  extends TransformStream<readonly MigrationRecord[], MappedRamWriterItem[]> {
  /**
   * Constructs a new instance.
   *
   * @param options The page size to start with.
   */
  constructor(options: MigrationEncoderOptions = {}) {
    const encoder = new MigrationEncoder(options);
    const writer = new ByteWriter(64 * 1024);
    let inEndSection = false;
    super({
      transform(batch, controller) {
        const out: MappedRamWriterItem[] = [];
        const flush = () => {
          if (writer.length > 0) {
            out.push({ type: "stream-bytes", data: writer.bytes().slice() });
            writer.reset();
          }
        };
        for (const record of batch) {
          switch (record.type) {
            case "ram-mem-size":
            case "ram-zero":
            case "ram-page":
            case "ram-xbzrle":
            case "ram-compressed":
            case "ram-multifd-flush":
              flush();
              out.push(record);
              break;
            case "ram-eos":
              flush();
              if (inEndSection) out.push({ type: "bitmap-flush" });
              inEndSection = false;
              out.push(record);
              break;
            case "configuration":
              encoder.encodeRecord(
                record.capabilities?.includes(MAPPED_RAM) ? record : {
                  ...record,
                  capabilities: [...record.capabilities ?? [], MAPPED_RAM],
                },
                writer,
              );
              break;
            case "device-tail":
              flush();
              out.push({ type: "stream-bytes", data: record.data });
              break;
            default:
              // Every section of a precopy stream's RAM END is "ram" (the
              // only iterative section the decoder accepts).
              if (record.type === "section-end") inEndSection = true;
              encoder.encodeRecord(record, writer);
          }
        }
        flush();
        if (out.length > 0) controller.enqueue(out);
      },
    });
  }
}
