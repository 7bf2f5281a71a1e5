/**
 * Inflating the zlib stream of a COMPRESS_PAGE record (QEMU 7.2's
 * `compress` capability; `decompress_data()` in `migration/ram.c`) with
 * the web platform's `DecompressionStream("deflate")`.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";

/**
 * Inflates a COMPRESS_PAGE record's zlib stream into one page.
 *
 * @param data The zlib stream.
 * @param pageSize The page size it must inflate to.
 * @param offset Stream offset of `data`, for errors.
 * @returns The page.
 * @throws {StreamFormatError} If the data is corrupt or inflates to
 *   another size.
 */
export async function inflatePage(
  data: Uint8Array,
  pageSize: number,
  offset: number,
): Promise<Uint8Array> {
  const page = new Uint8Array(pageSize);
  let size = 0;
  try {
    const stream = ReadableStream.from([data.slice()]).pipeThrough(
      new DecompressionStream("deflate"),
    );
    for await (const chunk of stream) {
      if (size + chunk.byteLength > pageSize) {
        size += chunk.byteLength;
        break;
      }
      page.set(chunk, size);
      size += chunk.byteLength;
    }
  } catch (cause) {
    throw new StreamFormatError(
      `Cannot inflate compressed page at offset ${offset}: the zlib data is corrupt`,
      { offset, cause },
    );
  }
  if (size !== pageSize) {
    throw new StreamFormatError(
      `Cannot inflate compressed page at offset ${offset}: it inflates to ${
        size > pageSize ? "more than" : ""
      } ${size} bytes, not ${pageSize}`,
      { offset },
    );
  }
  return page;
}
