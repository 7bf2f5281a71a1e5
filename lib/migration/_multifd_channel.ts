/**
 * The main thread's side of one destination multifd channel: it reads the
 * channel's connection and transfers each chunk to the channel's worker
 * (_multifd_channel_worker.ts), a bounded amount ahead of what the worker
 * has used, and turns the worker's reports into calls, in order. A socket
 * is read straight into a ring of shared memory the worker reads from.
 * Private to the destination.
 *
 * @module
 */

import type { Transport } from "../transport/transport.ts";
import type { MultifdCompression } from "../wire/multifd_flags.ts";
import type {
  ChannelPacketReport,
  FromChannelWorker,
  SharedRamBlock,
  ToChannelWorker,
} from "./_multifd_channel_worker.ts";
import type { PeekedTransport } from "./_peeked_transport.ts";
import { listenToWorker, rebuildError } from "./_worker_error.ts";

/** How far the main thread reads ahead of a worker, in copied bytes. */
const WINDOW_BYTES = 4 * 1024 * 1024;
/**
 * Size of the ring a socket is read into, shared with the worker, and the
 * most one read takes. The worker gives bytes back by whole reads, so it
 * holds at most one read it is partway through plus what it is waiting
 * for (a packet's data: at most 1 MiB compressed): that must leave room
 * for the reads it waits for.
 */
const RING_BYTES = 4 * 1024 * 1024;
const MAX_READ_BYTES = 512 * 1024;

/** What a {@linkcode MultifdChannel} reports to, in channel order. */
export interface MultifdChannelHandlers {
  /** The initial packet named the channel's id (may throw to refuse it). */
  initial(id: number): void;
  /**
   * One packet: count it, place handed-back pages, and for a SYNC wait
   * until the round is over. The worker goes on once this resolves.
   */
  packet(report: ChannelPacketReport, id: number): Promise<void> | void;
}

/** Options for {@linkcode MultifdChannel}. */
export interface MultifdChannelOptions {
  /** The target page size. */
  pageSize: number;
  /** `multifd-compression`. */
  compression: MultifdCompression;
  /**
   * The guest's RAM blocks when the worker may write them in place (each
   * over a `SharedArrayBuffer`), else undefined; asked at each release.
   */
  memory: () => SharedRamBlock[] | undefined;
  /** Where reports go. */
  handlers: MultifdChannelHandlers;
}

/** One channel connection and the worker that decodes it. */
export class MultifdChannel {
  readonly #transport: Transport;
  readonly #options: MultifdChannelOptions;
  readonly #worker: Worker;
  readonly #done = Promise.withResolvers<void>();
  readonly #ready = Promise.withResolvers<void>();
  #reports: Promise<void> = Promise.resolve();
  #id = -1;
  #ahead = 0;
  /** Bytes read into the ring, and bytes of it the worker is done with. */
  #ringWritten = 0;
  #ringReleased = 0;
  #credit: PromiseWithResolvers<void> | undefined;
  #blocksSent = false;
  #stopped = false;

  /**
   * Starts the worker and reads `transport` into it.
   *
   * @param transport The channel connection.
   * @param options Settings, RAM, where reports go.
   */
  constructor(transport: Transport, options: MultifdChannelOptions) {
    this.#transport = transport;
    this.#options = options;
    this.#done.promise.catch(() => {});
    this.#worker = new Worker(
      new URL("./_multifd_channel_worker.ts", import.meta.url),
      { type: "module" },
    );
    listenToWorker<FromChannelWorker>(
      this.#worker,
      (message) => this.#receive(message),
      (error) => this.#fail(error),
    );
    this.#post({
      type: "start",
      pageSize: options.pageSize,
      compression: options.compression,
    });
    const blocks = options.memory();
    if (blocks !== undefined) this.#sendBlocks(blocks);
    this.#pump().catch((error) => this.#fail(error));
  }

  /**
   * Settles when the channel ended cleanly between packets (resolves) or
   * failed (rejects with the error the worker or the connection had).
   */
  get done(): Promise<void> {
    return this.#done.promise;
  }

  /** Resolves once the worker has loaded. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Stops the worker and closes the connection. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#worker.terminate();
      this.#credit?.resolve();
    }
    await this.#transport.close().catch(() => {});
  }

  async #pump(): Promise<void> {
    const transport = this.#transport as Partial<PeekedTransport> & Transport;
    if (transport.readInto !== undefined && transport.head !== undefined) {
      if (transport.head.byteLength > 0) this.#send(transport.head);
      return await this.#pumpIntoRing(transport.readInto);
    }
    const reader = transport.readable.getReader();
    const owned = transport.copiesWrites === true;
    try {
      while (await this.#room()) {
        const { value, done } = await reader.read();
        if (this.#stopped) return;
        if (done) return this.#post({ type: "end" });
        if (value.byteLength === 0) continue;
        // A socket's chunks are fresh buffers of their own: they move to
        // the worker. Other transports may hand over memory their writer
        // still uses, so that is copied first.
        this.#send(
          owned && value.buffer instanceof ArrayBuffer ? value : value.slice(),
        );
      }
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * Reads the socket straight into a ring shared with the worker, which
   * hears where each read landed and says how much it is done with: no
   * buffer is allocated, transferred or copied per read.
   */
  async #pumpIntoRing(
    readInto: (view: Uint8Array) => Promise<number | null>,
  ): Promise<void> {
    const ring = new Uint8Array(new SharedArrayBuffer(RING_BYTES));
    this.#post({ type: "ring", ring });
    while (await this.#room()) {
      const start = this.#ringWritten % RING_BYTES;
      const free = RING_BYTES - (this.#ringWritten - this.#ringReleased);
      const size = Math.min(free, RING_BYTES - start, MAX_READ_BYTES);
      const view = ring.subarray(start, start + size);
      const count = await readInto(view);
      if (this.#stopped) return;
      if (count === null) return this.#post({ type: "end" });
      this.#ringWritten += count;
      this.#post({ type: "ring-data", start, length: count });
    }
  }

  /** Waits until the worker may take another chunk; false once stopped. */
  async #room(): Promise<boolean> {
    while (
      !this.#stopped &&
      (this.#ahead >= WINDOW_BYTES ||
        this.#ringWritten - this.#ringReleased >= RING_BYTES)
    ) {
      this.#credit = Promise.withResolvers<void>();
      await this.#credit.promise;
    }
    return !this.#stopped;
  }

  /** Moves a chunk to the worker (its buffer is transferred). */
  #send(bytes: Uint8Array): void {
    this.#ahead += bytes.byteLength;
    this.#post({ type: "data", bytes }, [bytes.buffer as ArrayBuffer]);
  }

  #receive(message: FromChannelWorker): void {
    if (message.type === "ready") return this.#ready.resolve();
    if (message.type === "consumed") {
      this.#ahead -= message.bytes;
      return this.#credit?.resolve();
    }
    if (message.type === "released") {
      this.#ringReleased += message.bytes;
      return this.#credit?.resolve();
    }
    this.#reports = this.#reports.then(() => this.#handle(message)).catch(
      (error) => this.#fail(error),
    );
  }

  async #handle(message: FromChannelWorker): Promise<void> {
    if (this.#stopped) return;
    const { handlers } = this.#options;
    switch (message.type) {
      case "initial":
        this.#id = message.channelId;
        return handlers.initial(message.channelId);
      case "packet":
        await handlers.packet(message, this.#id);
        if (message.pages !== undefined) this.#post({ type: "placed" });
        if (message.sync) this.#release();
        return;
      case "ended":
        return this.#done.resolve();
      case "error": {
        const channel = this.#id < 0 ? "" : ` ${this.#id}`;
        throw rebuildError(
          message.error,
          `, on multifd channel${channel} from ${this.#transport.description}`,
        );
      }
    }
  }

  /** Lets the worker go on after its SYNC, with the RAM if it is shared. */
  #release(): void {
    if (!this.#blocksSent) {
      const blocks = this.#options.memory();
      if (blocks !== undefined) this.#sendBlocks(blocks);
    }
    this.#post({ type: "release" });
  }

  #sendBlocks(blocks: SharedRamBlock[]): void {
    this.#blocksSent = true;
    this.#post({ type: "blocks", blocks });
  }

  #post(message: ToChannelWorker, transfer: Transferable[] = []): void {
    if (!this.#stopped) this.#worker.postMessage(message, transfer);
  }

  #fail(error: unknown): void {
    this.#done.reject(error);
    void this.stop();
  }
}
