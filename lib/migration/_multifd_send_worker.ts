/**
 * The worker that encodes one multifd channel's packets on the source
 * (QEMU 7.2's per-channel sending thread, `multifd_send_thread`): given a
 * batch of pages by where they are (byte offsets into the guest's shared
 * RAM, or copies for pages that are not in shared memory), it gathers
 * them, compresses them with the channel's own zlib/zstd session, and
 * gives back the packet's bytes, header and data in one buffer of their
 * own (transferred). The main thread writes them to the socket. Private to
 * the source; _multifd_send_channel.ts is the main thread's side.
 *
 * @module
 */

import type { MultifdCompression } from "../wire/multifd_flags.ts";
import {
  encodeMultifdPacketHeader,
  type MultifdPacketHeader,
} from "../wire/multifd_packet.ts";
import { MultifdPageCompressor } from "../wire/multifd_page_compressor.ts";
import { serializeError, type WorkerErrorData } from "./_worker_error.ts";

/** A batch of pages to send as one packet. */
export interface EncodeRequest {
  type: "encode";
  /** The header, without its data size (the worker knows it). */
  header: Omit<MultifdPacketHeader, "nextPacketSize">;
  /** The guest RAM the pages are in, when any is in shared memory. */
  shared?: SharedArrayBuffer | undefined;
  /**
   * Per page, in packet order: its byte offset in `shared`, or −(i + 1)
   * for page i of `inline`.
   */
  starts: Float64Array;
  /** Copies of pages that are not in shared memory. */
  inline?: ArrayBuffer | undefined;
}

/** What the main thread posts to a send worker. */
export type ToSendWorker =
  | {
    type: "start";
    compression: MultifdCompression;
    level: number;
    pageSize: number;
  }
  | EncodeRequest;

/** What a send worker posts back: a packet's bytes, or why not. */
export type FromSendWorker =
  | { type: "ready" }
  | { type: "encoded"; bytes: Uint8Array }
  | { type: "error"; error: WorkerErrorData };

/** The worker's side of the message channel. */
export interface SendWorkerScope {
  postMessage(message: FromSendWorker, transfer?: Transferable[]): void;
  addEventListener(
    type: "message",
    listener: (event: MessageEvent<ToSendWorker>) => void,
  ): void;
}

/**
 * Runs a send worker on `scope`: encodes each request in turn.
 *
 * @param scope Where requests come from and packets go to.
 */
export function runSendWorker(scope: SendWorkerScope): void {
  let encoder: PacketEncoder | undefined;
  let queue = Promise.resolve();
  scope.addEventListener("message", ({ data }) => {
    if (data.type === "start") {
      encoder ??= new PacketEncoder(data);
      return;
    }
    const current = encoder!;
    queue = queue.then(async () => {
      try {
        const bytes = await current.encode(data);
        scope.postMessage({ type: "encoded", bytes }, [bytes.buffer]);
      } catch (error) {
        scope.postMessage({ type: "error", error: serializeError(error) });
      }
    });
  });
}

/** One channel's packets: its compression session, its page size. */
class PacketEncoder {
  readonly #compression: MultifdCompression;
  readonly #pageSize: number;
  readonly #compressor: MultifdPageCompressor;

  constructor(
    settings: {
      compression: MultifdCompression;
      level: number;
      pageSize: number;
    },
  ) {
    this.#compression = settings.compression;
    this.#pageSize = settings.pageSize;
    this.#compressor = new MultifdPageCompressor(settings.compression, {
      level: settings.level,
    });
  }

  async encode(request: EncodeRequest): Promise<Uint8Array<ArrayBuffer>> {
    const pageSize = this.#pageSize;
    const shared = request.shared && new Uint8Array(request.shared);
    const inline = request.inline && new Uint8Array(request.inline);
    const pages = Array.from(request.starts, (start) => {
      if (start >= 0) return shared!.subarray(start, start + pageSize);
      const at = (-start - 1) * pageSize;
      return inline!.subarray(at, at + pageSize);
    });
    const compressed = this.#compression === "none"
      ? undefined
      : await this.#compressor.compress(pages);
    const dataSize = compressed?.byteLength ?? pages.length * pageSize;
    const header = encodeMultifdPacketHeader({
      ...request.header,
      nextPacketSize: dataSize,
    }, { pageSize });
    const out = new Uint8Array(header.byteLength + dataSize);
    out.set(header);
    if (compressed !== undefined) out.set(compressed, header.byteLength);
    else {
      for (const [i, page] of pages.entries()) {
        out.set(page, header.byteLength + i * pageSize);
      }
    }
    return out;
  }
}

if ("WorkerGlobalScope" in globalThis) {
  const scope = globalThis as unknown as SendWorkerScope;
  runSendWorker(scope);
  scope.postMessage({ type: "ready" });
}
