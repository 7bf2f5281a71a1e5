/**
 * The batch of records a decoder is filling: it goes out when it is full,
 * and whenever the decoder would otherwise wait for input, so records are
 * never held back behind a slow connection.
 *
 * @module
 */

import type { ByteReader } from "../streams/byte_reader.ts";
import type { MigrationRecord } from "./migration_record.ts";

/** Records decoded and not yet handed out. */
export class RecordBatch {
  readonly #limit: number;
  #records: MigrationRecord[] = [];

  /**
   * Constructs a new instance.
   *
   * @param limit Most records per batch.
   */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Records in the batch. */
  get length(): number {
    return this.#records.length;
  }

  /** Whether the batch holds `limit` records or more. */
  get full(): boolean {
    return this.#records.length >= this.#limit;
  }

  /**
   * Adds a record.
   *
   * @param record The record.
   */
  push(record: MigrationRecord): void {
    this.#records.push(record);
  }

  /**
   * Hands the batch out and starts a new one.
   *
   * @returns The records.
   */
  take(): MigrationRecord[] {
    const records = this.#records;
    this.#records = [];
    return records;
  }

  /**
   * Yields the batch when it is not empty and `size` bytes are not yet
   * buffered, that is when reading them would wait.
   *
   * @param reader The bytes.
   * @param size How many bytes the decoder reads next.
   * @returns The batch, if it must go out now.
   */
  *flushIfWaiting(
    reader: ByteReader,
    size: number,
  ): Generator<MigrationRecord[]> {
    if (reader.buffered < size && this.#records.length > 0) yield this.take();
  }

  /**
   * Yields the batch when it is not empty.
   *
   * @returns The batch, if it holds records.
   */
  *flush(): Generator<MigrationRecord[]> {
    if (this.#records.length > 0) yield this.take();
  }
}
