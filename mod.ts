/**
 * livemig: QEMU's live migration as WHATWG stream stages for Deno.
 *
 * Decode a QEMU migration stream into typed records and rebuild the guest
 * RAM the destination would hold:
 *
 * ```ts
 * import { ByteReader } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const reader = new ByteReader(ReadableStream.from([new Uint8Array([0x51, 0x45, 0x56, 0x4d])]));
 * assert.equal(await reader.readUint32(), 0x5145564d);
 * ```
 *
 * @module
 */
export * from "./lib/bytes/byte_writer.ts";
export * from "./lib/bytes/uleb128.ts";
export * from "./lib/errors.ts";
export * from "./lib/ram/ram_record.ts";
export * from "./lib/streams/byte_reader.ts";
export * from "./lib/streams/clock.ts";
