/**
 * The encoding stage of a {@linkcode MigrationProxy}. Private to the
 * proxy.
 *
 * @module
 */

import { ByteWriter } from "../bytes/byte_writer.ts";
import { MigrationEncoder } from "../wire/migration_encoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";

/** What a {@linkcode ProxyEncoderStream} tells the proxy's pacer. */
export interface ProxyEncoderPacing {
  /**
   * Numbers a chunk the encoder hands on.
   *
   * @returns The chunk.
   */
  chunk(bytes: Uint8Array): Uint8Array;
  /**
   * Notes that `record` went into the chunk being built.
   *
   * @returns Whether the chunk must be cut here (urgent data ends).
   */
  encoded(record: MigrationRecord): boolean;
}

/**
 * Encodes record batches into stream bytes (as `MigrationEncoderStream`
 * does), numbering its chunks for the pacer and cutting one right after
 * urgent data; forgets the current block at the switch to postcopy, as
 * QEMU's source does before its discards. The device tail goes out as it
 * came, chunk by chunk.
 */
export class ProxyEncoderStream
  extends TransformStream<readonly MigrationRecord[], Uint8Array> {
  /**
   * Constructs a new instance.
   *
   * @param pacing The pacer to number chunks for.
   * @param chunkBytes How many bytes to gather before a chunk goes out.
   */
  constructor(pacing: ProxyEncoderPacing, chunkBytes: number) {
    const encoder = new MigrationEncoder();
    const writer = new ByteWriter(
      Math.min(chunkBytes + 8192, 4 * 1024 * 1024),
    );
    super({
      transform(batch, controller) {
        for (const record of batch) {
          if (record.type === "device-tail") {
            if (writer.length > 0) {
              controller.enqueue(pacing.chunk(writer.takeBytes()));
            }
            controller.enqueue(pacing.chunk(record.data));
            continue;
          }
          if (
            record.type === "command" &&
            (record.command === "POSTCOPY_RAM_DISCARD" ||
              record.command === "PACKAGED")
          ) {
            encoder.forgetCurrentBlock();
          }
          encoder.encodeRecord(record, writer);
          if (pacing.encoded(record) || writer.length >= chunkBytes) {
            controller.enqueue(pacing.chunk(writer.takeBytes()));
          }
        }
        if (writer.length > 0) {
          controller.enqueue(pacing.chunk(writer.takeBytes()));
        }
      },
    });
  }
}
