/**
 * The postcopy-preempt connection of the source. Private to the source.
 *
 * @module
 */

import { isZeroPage } from "../bytes/is_zero_page.ts";
import type { PageRequestQueue } from "../postcopy/page_request_queue.ts";
import { takeRequested } from "../postcopy/postcopy_page_source_stream.ts";
import type { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import type { OutgoingChannel } from "./_outgoing_channel.ts";

/**
 * The postcopy-preempt channel: requested pages go out on their own
 * connection as soon as they are asked for, so they never queue behind the
 * background copy. RAM records only, no header, no sections, EOS at the
 * end.
 */
export class PreemptChannel {
  readonly #channel: OutgoingChannel;
  readonly #stop = Promise.withResolvers<void>();
  readonly #served: Promise<void>;
  #stopping = false;

  /**
   * Starts serving `requests` on `channel`.
   *
   * @param channel The preempt connection (no rate limit).
   * @param scanner The pages still to send.
   * @param requests The destination's page requests.
   */
  constructor(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
    requests: PageRequestQueue,
  ) {
    this.#channel = channel;
    this.#served = this.#serve(scanner, requests);
    this.#served.catch((error) => channel.fail(error));
  }

  /** Bytes sent on this connection so far. */
  get bytesPassed(): number {
    return this.#channel.limiter.bytesPassed;
  }

  async #serve(
    scanner: DirtyPageScanner,
    requests: PageRequestQueue,
  ): Promise<void> {
    while (!this.#stopping) {
      await Promise.race([requests.wait(), this.#stop.promise]);
      for (
        let batch = takeRequested(scanner, requests, { resend: true });
        batch;
        batch = takeRequested(scanner, requests, { resend: true })
      ) {
        const { block, pages } = batch;
        const pageSize = block.bytes.byteLength / block.pageCount;
        const records: MigrationRecord[] = [];
        for (const page of pages) {
          const offset = page * pageSize;
          const data = block.bytes.subarray(offset, offset + pageSize);
          records.push(
            isZeroPage(data)
              ? { type: "ram-zero", block: block.idstr, offset, fill: 0 }
              : { type: "ram-page", block: block.idstr, offset, data },
          );
        }
        await this.#channel.write(records);
      }
    }
  }

  /** Serves what is queued, then ends the connection with EOS. */
  async finish(): Promise<void> {
    this.#stopping = true;
    this.#stop.resolve();
    await this.#served;
    await this.#channel.write([{ type: "ram-eos" }]);
    await this.#channel.finish();
  }

  /** Stops serving and closes the connection. */
  close(): void {
    this.#stopping = true;
    this.#stop.resolve();
    void this.#channel.close();
  }
}
