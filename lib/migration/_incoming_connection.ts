/**
 * One connection a destination loads a migration from, and the return path
 * on it. Private to the destination.
 *
 * The return path exists only once the source opened it (OPEN_RETURN_PATH;
 * after a postcopy recovery it comes back open). Replies are written in
 * the order they are made; once one fails, the later ones fail too.
 *
 * @module
 */

import { MigrationProtocolError } from "../errors.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationDecoder } from "../wire/migration_decoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import {
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../wire/return_path_message.ts";
import type { RecordLoader } from "./_record_loader.ts";

/** Options for {@linkcode IncomingConnection}. */
export interface IncomingConnectionOptions {
  /**
   * Whether the connection continues a paused postcopy migration: the
   * return path is open from the start, and the stream goes on where the
   * lost one stopped (no header, the RAM section already announced).
   *
   * @default {false}
   */
  recovery?: boolean;
}

/** Where the records of one load come from, and where replies go. */
export class IncomingConnection {
  /** The connection. */
  readonly transport: Transport;
  /** Whether the source opened the return path. */
  returnPath: boolean;
  /**
   * The block of the last page request, so that the next request for the
   * same block may leave out its name (REQ_PAGES instead of REQ_PAGES_ID).
   */
  lastRequestedBlock: number | undefined;
  readonly #recovery: boolean;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #chain = Promise.resolve();

  /**
   * Constructs a new instance.
   *
   * @param transport The connection from the source.
   * @param options Whether it continues a paused postcopy migration.
   */
  constructor(transport: Transport, options: IncomingConnectionOptions = {}) {
    this.transport = transport;
    this.#recovery = options.recovery ?? false;
    // In a recovery the return path comes back without OPEN_RETURN_PATH.
    this.returnPath = this.#recovery;
    this.lastRequestedBlock = undefined;
  }

  /**
   * Decodes the connection until EOF, into `loader`.
   *
   * @param loader Applies the records.
   * @param accept Accepts the postcopy-preempt connection.
   * @returns When EOF was loaded.
   */
  async load(
    loader: RecordLoader,
    accept: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    const guest = loader.guest;
    const decoder = new MigrationDecoder(
      this.#recovery && guest
        ? {
          kind: "postcopy-recovery",
          blocks: guest.memory.blocks.map((b) => ({
            idstr: b.idstr,
            usedLength: b.bytes.byteLength,
          })),
          sections: [{
            sectionId: loader.ramSectionId,
            idstr: "ram",
            instanceId: 0,
            versionId: 4,
          }],
          pageSize: guest.memory.pageSize,
        }
        : { deviceState: "walk" },
    );
    // Read into one reused buffer: every record of a batch is applied (its
    // bytes copied into guest RAM) before the decoder reads again, which is
    // when the buffer is reused. Fresh chunks would mean first-touch page
    // faults on every read.
    const reader = new ByteReader(this.transport.readable, 0, {
      bufferBytes: 1 << 20,
    });
    try {
      await loader.load(refuseMappedRam(decoder.decode(reader)), {
        accept,
        position: () => reader.offset,
      });
    } catch (error) {
      await reader.cancel(error).catch(() => {});
      throw error;
    }
  }

  /**
   * Sends `message` on the return path, after every earlier reply.
   *
   * @param message The message.
   * @returns When it was written.
   * @throws {MigrationProtocolError} (as a rejection) If the source never
   *   opened the return path.
   */
  reply(message: ReturnPathMessage): Promise<void> {
    if (!this.returnPath) return Promise.reject(noReturnPath(message));
    const writer = this.#writer ??= this.transport.writable.getWriter();
    const bytes = encodeReturnPathMessage(message);
    this.#chain = this.#chain.then(() => writer.write(bytes));
    return this.#chain;
  }

  /**
   * Closes the connection.
   *
   * @returns When it is closed.
   */
  close(): Promise<void> {
    return this.transport.close();
  }

  /**
   * Sends what was replied, then closes the connection: a transport may
   * hold a small write back to send it with the next one, and closing
   * would drop it (a SHUT the source waits for).
   *
   * @returns When it is closed.
   */
  async finish(): Promise<void> {
    const writer = this.#writer;
    if (writer !== undefined) {
      await this.#chain.catch(() => {});
      await writer.close().catch(() => {});
    }
    await this.transport.close();
  }
}

/**
 * Passes the batches on, refusing a stream whose CONFIGURATION announces
 * mapped-ram: its pages lie at fixed offsets of a file, not in the stream,
 * so loading it as a stream would leave the guest's RAM empty.
 */
async function* refuseMappedRam(
  batches: AsyncIterable<MigrationRecord[]>,
): AsyncGenerator<MigrationRecord[]> {
  let checking = true;
  for await (const batch of batches) {
    for (const record of checking ? batch : []) {
      if (record.type === "configuration") {
        if (record.capabilities?.includes("mapped-ram")) {
          throw new MigrationProtocolError(
            "Cannot load a mapped-ram stream as a stream: its pages lie at fixed offsets of a file, not in the stream; load the file as mapped-ram (the mapped-ram capability)",
          );
        }
      } else if (record.type !== "header") checking = false;
    }
    yield batch;
  }
}

/**
 * The error for a reply that has no return path to go on.
 *
 * @param message The reply.
 * @returns The error.
 */
export function noReturnPath(
  message: ReturnPathMessage,
): MigrationProtocolError {
  return new MigrationProtocolError(
    `Cannot answer ${message.type}: the source never opened the return path`,
  );
}
