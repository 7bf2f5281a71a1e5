import type { RamRecord } from "./ram_record.ts";

/** Options for {@linkcode CompressPageStream}. */
export interface CompressPageStreamOptions {
  /**
   * Pages compressed at once (each through its own
   * `CompressionStream`), keeping order.
   *
   * @default {16}
   */
  concurrency?: number;
}

/**
 * Turns PAGE records into QEMU 7.2's COMPRESS_PAGE records: each page
 * deflated on its own into a zlib stream (`CompressionStream("deflate")`,
 * the format of zlib's `compress2()` that QEMU 7.2 uses), which any 7.2
 * destination inflates. Other records pass unchanged. A page that would
 * not shrink stays a PAGE record.
 *
 * QEMU 7.2 sends COMPRESS_PAGE only with the `compress` capability and
 * stops once XBZRLE starts; QEMU 9.1 removed it. It is kept here for
 * multi-channel and 7.2 interoperability work.
 *
 * @example Usage
 * ```ts
 * import { CompressPageStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const page = new Uint8Array(4096).fill(7);
 * const [records] = await Array.fromAsync(
 *   ReadableStream.from([[{ type: "ram-page" as const, block: "pc.ram", offset: 0, data: page }]])
 *     .pipeThrough(new CompressPageStream()),
 * );
 * assert.equal(records![0]!.type, "ram-compressed");
 * ```
 */
export class CompressPageStream
  extends TransformStream<RamRecord[], RamRecord[]> {
  /**
   * Constructs a new instance.
   *
   * @param options How many pages to compress at once.
   */
  constructor(options: CompressPageStreamOptions = {}) {
    const concurrency = options.concurrency ?? 16;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError(
        `Cannot construct CompressPageStream as concurrency must be a positive integer: received ${concurrency}`,
      );
    }
    super({
      async transform(batch, controller) {
        const out: RamRecord[] = new Array(batch.length);
        for (let start = 0; start < batch.length; start += concurrency) {
          await Promise.all(
            batch.slice(start, start + concurrency).map(async (record, i) => {
              out[start + i] = record.type === "ram-page"
                ? await compressRecord(record)
                : record;
            }),
          );
        }
        controller.enqueue(out);
      },
    });
  }
}

async function compressRecord(
  record: RamRecord & { type: "ram-page" },
): Promise<RamRecord> {
  const data = new Uint8Array(
    await new Response(
      ReadableStream.from([record.data.slice()]).pipeThrough(
        new CompressionStream("deflate"),
      ),
    ).arrayBuffer(),
  );
  if (data.byteLength >= record.data.byteLength) return record;
  const compressed: RamRecord = {
    type: "ram-compressed",
    block: record.block,
    offset: record.offset,
    data,
    page: record.data,
  };
  if (record.continued !== undefined) compressed.continued = record.continued;
  return compressed;
}
