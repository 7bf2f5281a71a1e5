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
import type { Transport } from "../transport/transport.ts";
import {
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../wire/return_path_message.ts";

/** Options for {@linkcode IncomingConnection}. */
export interface IncomingConnectionOptions {
  /**
   * Whether the return path is open from the start (a postcopy recovery).
   *
   * @default {false}
   */
  returnPath?: boolean;
}

/** Where the records of one load come from, and where replies go. */
export class IncomingConnection {
  /** The connection; undefined when the records come from elsewhere. */
  readonly transport: Transport | undefined;
  /** Whether the source opened the return path. */
  returnPath: boolean;
  /**
   * The block of the last page request, so that the next request for the
   * same block may leave out its name (REQ_PAGES instead of REQ_PAGES_ID).
   */
  lastRequestedBlock: number | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #chain = Promise.resolve();

  /**
   * Constructs a new instance.
   *
   * @param transport The connection from the source, if any.
   * @param options Whether the return path is already open.
   */
  constructor(
    transport?: Transport,
    options: IncomingConnectionOptions = {},
  ) {
    this.transport = transport;
    this.returnPath = options.returnPath ?? false;
    this.lastRequestedBlock = undefined;
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
    const transport = this.transport;
    if (!this.returnPath || transport === undefined) {
      return Promise.reject(
        new MigrationProtocolError(
          `Cannot answer ${message.type}: the source never opened the return path`,
        ),
      );
    }
    const writer = this.#writer ??= transport.writable.getWriter();
    const bytes = encodeReturnPathMessage(message);
    this.#chain = this.#chain.then(() => writer.write(bytes));
    return this.#chain;
  }

  /**
   * Closes the connection, if there is one.
   *
   * @returns When it is closed.
   */
  close(): Promise<void> {
    return this.transport?.close() ?? Promise.resolve();
  }
}
