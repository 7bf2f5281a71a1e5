/**
 * The destination end of a live migration (QEMU's incoming side): loads
 * the stream into a guest of the announced size, answers the return path,
 * and resumes the guest only after the whole stream is loaded.
 *
 * ```
 * transport.readable → MigrationDecoderStream → records
 *   OPEN_RETURN_PATH → open the reverse direction    PING n → PONG n
 *   block list       → create the guest (size capped by maxRamBytes)
 *   ZERO/PAGE/XBZRLE → apply to guest RAM in stream order
 *   livemig-guest    → load the guest's device state
 *   EOF (+ vmdesc)   → completed, SHUT 0, resume the guest
 * any error          → failed, SHUT 1, the guest is never resumed
 * ```
 *
 * @module
 */

import { MigrationAbortedError, StreamFormatError } from "../errors.ts";
import { GuestMemory } from "../guest/guest_memory.ts";
import { HostedGuest } from "../guest/hosted_guest.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { SimulatedGuest } from "../guest/simulated_guest.ts";
import { applyRamRecord } from "../ram/apply_ram_record.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import {
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../wire/return_path_message.ts";
import { GUEST_SECTION_IDSTR } from "./guest_device_section.ts";
import type { MigrationInfo } from "./migration_info.ts";
import {
  type MigrationEventDetail,
  MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";

/** The guest a destination builds from the announced RAM blocks. */
export type GuestFactory = (
  blocks: readonly RamBlockInfo[],
  machine: string | undefined,
) => MigratableGuest;

/** Options for {@linkcode DestinationMigration}. */
export interface DestinationMigrationOptions {
  /**
   * Builds the guest once the block list arrives. The default builds a
   * paused {@linkcode SimulatedGuest} for livemig streams (machine
   * `livemig`, one block) and a memory-only guest for anything else (a
   * QEMU guest's RAM).
   */
  createGuest?: GuestFactory;
  /**
   * Largest total RAM the stream may announce.
   *
   * @default {16 * 1024 ** 3}
   */
  maxRamBytes?: number;
  /**
   * Whether to resume the guest once loaded (QEMU's autostart).
   *
   * @default {true}
   */
  autostart?: boolean;
  /** Time source. Defaults to the real clock. */
  clock?: Clock;
  /**
   * Called with the loaded guest after EOF, before it is resumed (e.g. to
   * dump its RAM).
   */
  beforeResume?: (guest: MigratableGuest) => void | Promise<void>;
  /**
   * Whether to emit `"migration"` events (QEMU's `events` capability).
   *
   * @default {false}
   */
  events?: boolean;
}

/** What a completed incoming migration produced. */
export interface IncomingResult {
  /** The guest, loaded (and running unless autostart is off). */
  guest: MigratableGuest;
  /** The final info, status `completed`. */
  info: MigrationInfo;
  /** The machine name the stream announced, if any. */
  machine: string | undefined;
  /** Whether the stream came from livemig (its own device section). */
  livemig: boolean;
}

/**
 * Receives a migration over a {@linkcode Transport} into a new guest.
 *
 * Never reports `completed` for RAM it did not fully receive: the status
 * moves to `completed` only after EOF (and the vmdesc trailer) decoded
 * without error; the guest is resumed only then.
 *
 * @example Usage
 * ```ts
 * import {
 *   createMemoryTransportPair, DestinationMigration, SimulatedGuest, SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const guest = new SimulatedGuest({ ramBytes: 64 * 4096, workload: { kind: "fill" }, running: false });
 * const [a, b] = createMemoryTransportPair();
 * const destination = new DestinationMigration({ autostart: false });
 * const [, incoming] = await Promise.all([new SourceMigration(guest).migrate(a), destination.incoming(b)]);
 * assert.equal(destination.status, "completed");
 * assert.equal(incoming.livemig, true);
 * assert.equal(incoming.guest.running, false);
 * ```
 */
export class DestinationMigration extends EventTarget {
  readonly #options: DestinationMigrationOptions;
  readonly #clock: Clock;
  #state: MigrationState;
  #startTime = 0;
  #endTime: number | undefined;
  #errorDesc: string | undefined;
  #guest: MigratableGuest | undefined;
  #received = { duplicate: 0, normal: 0, xbzrle: 0, bytes: 0 };
  #transport: Transport | undefined;

  /**
   * Constructs a new instance in status `none`.
   *
   * @param options How to build the guest and the limits.
   */
  constructor(options: DestinationMigrationOptions = {}) {
    super();
    this.#options = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#state = new MigrationState("destination");
    this.#state.addEventListener("migration", (event) => {
      if (!options.events) return;
      this.dispatchEvent(
        new CustomEvent<MigrationEventDetail>("migration", {
          detail: (event as CustomEvent<MigrationEventDetail>).detail,
        }),
      );
    });
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#state.status;
  }

  /** The guest, once the block list arrived. */
  get guest(): MigratableGuest | undefined {
    return this.#guest;
  }

  /**
   * What `query-migrate` reports on the destination.
   *
   * @returns The info.
   */
  query(): MigrationInfo {
    const info: MigrationInfo = { status: this.status };
    if (this.status === "none" || this.status === "setup") return info;
    info["total-time"] = Math.round(
      (this.#endTime ?? this.#clock.now()) - this.#startTime,
    );
    const pageSize = this.#guest?.memory.pageSize ?? 4096;
    info.ram = {
      transferred: this.#received.bytes,
      remaining: 0,
      total: this.#guest?.memory.totalBytes ?? 0,
      duplicate: this.#received.duplicate,
      skipped: 0,
      normal: this.#received.normal,
      "normal-bytes": this.#received.normal * pageSize,
      "dirty-pages-rate": 0,
      mbps: 0,
      "dirty-sync-count": 0,
      "postcopy-requests": 0,
      "page-size": pageSize,
      "multifd-bytes": 0,
      "pages-per-second": 0,
      "precopy-bytes": this.#received.bytes,
      "downtime-bytes": 0,
      "postcopy-bytes": 0,
      "dirty-sync-missed-zero-copy": 0,
    };
    if (this.#errorDesc !== undefined) info["error-desc"] = this.#errorDesc;
    return info;
  }

  /**
   * Marks the destination as waiting (QEMU's `-incoming`): status `setup`.
   * {@linkcode DestinationMigration.incoming} does it when not done yet.
   */
  listen(): void {
    if (this.status === "none") this.#state.moveTo("setup");
  }

  /**
   * Aborts the incoming migration (the connection is closed; status
   * `failed`).
   *
   * @param reason Why.
   */
  abort(reason = "the incoming migration was aborted"): void {
    this.#errorDesc ??= reason;
    void this.#transport?.close();
  }

  /**
   * Loads the migration that arrives on `transport`.
   *
   * @param transport The connection from the source.
   * @returns The loaded guest and the final info.
   * @throws {MigrationAbortedError} When the stream is bad or cut; the
   *   status is then `failed` and the guest was not resumed.
   */
  async incoming(transport: Transport): Promise<IncomingResult> {
    this.listen();
    if (this.status !== "setup") {
      throw new TypeError(
        `Cannot receive a migration: the destination is in "${this.status}"`,
      );
    }
    this.#transport = transport;
    this.#startTime = this.#clock.now();
    this.#state.moveTo("active");
    const counted = transport.readable.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform: (chunk, controller) => {
          this.#received.bytes += chunk.byteLength;
          controller.enqueue(chunk);
        },
      }),
    );
    const decoder = new MigrationDecoderStream({ deviceState: "walk" });
    let returnPath: WritableStreamDefaultWriter<Uint8Array> | undefined;
    let machine: string | undefined;
    let livemig = false;
    let guestState: Uint8Array | undefined;
    const reply = async (message: ReturnPathMessage) => {
      if (returnPath === undefined) {
        throw new StreamFormatError(
          `Cannot answer ${message.type}: the source never opened the return path`,
          { offset: 0 },
        );
      }
      await returnPath.write(encodeReturnPathMessage(message));
    };
    try {
      for await (const batch of counted.pipeThrough(decoder)) {
        for (const record of batch) {
          switch (record.type) {
            case "configuration":
              machine = record.machine;
              break;
            case "command":
              if (record.command === "OPEN_RETURN_PATH") {
                returnPath ??= transport.writable.getWriter();
              } else if (record.command === "PING") {
                await reply({ type: "PONG", value: record.value });
              } else if (record.command !== "SWITCHOVER_START") {
                throw new StreamFormatError(
                  `Cannot load command ${record.command}: postcopy and COLO commands need the postcopy destination`,
                  { offset: 0 },
                );
              }
              break;
            case "ram-mem-size":
              this.#createGuest(record.blocks, machine);
              break;
            case "ram-zero":
            case "ram-page":
            case "ram-xbzrle":
            case "ram-compressed":
              if (this.#guest === undefined) {
                throw new StreamFormatError(
                  "Cannot load a page before the block list",
                  { offset: 0 },
                );
              }
              applyRamRecord(record, this.#guest.memory);
              if (record.type === "ram-zero") this.#received.duplicate++;
              else if (record.type === "ram-xbzrle") this.#received.xbzrle++;
              else this.#received.normal++;
              break;
            case "device-state":
              if (record.idstr === GUEST_SECTION_IDSTR) {
                guestState = record.data;
                livemig = true;
              }
              break;
            default:
              break;
          }
        }
      }
      const guest = this.#guest;
      if (guest === undefined) {
        throw new StreamFormatError(
          "Cannot complete the incoming migration: the stream held no RAM",
          { offset: 0 },
        );
      }
      if (guestState !== undefined) guest.loadState(guestState);
      this.#endTime = this.#clock.now();
      this.#state.moveTo("completed");
      if (returnPath) {
        await reply({ type: "SHUT", value: 0 });
        returnPath.releaseLock();
      }
      await this.#options.beforeResume?.(guest);
      if (this.#options.autostart ?? true) guest.resume();
      await transport.close();
      return { guest, info: this.query(), machine, livemig };
    } catch (error) {
      this.#endTime = this.#clock.now();
      const message = this.#errorDesc ??
        (error instanceof Error ? error.message : String(error));
      this.#errorDesc = message;
      this.#state.moveTo("failed");
      if (returnPath) {
        await returnPath.write(
          encodeReturnPathMessage({ type: "SHUT", value: 1 }),
        )
          .catch(() => {});
      }
      await transport.close().catch(() => {});
      throw new MigrationAbortedError(
        `Cannot complete the incoming migration: ${message}`,
        { reason: "stream-error", cause: error },
      );
    }
  }

  #createGuest(
    blocks: readonly RamBlockInfo[],
    machine: string | undefined,
  ): void {
    if (this.#guest !== undefined) {
      const known = this.#guest.memory.blocks;
      const same = blocks.length === known.length &&
        blocks.every((b, i) =>
          b.idstr === known[i]!.idstr &&
          b.usedLength === known[i]!.bytes.byteLength
        );
      if (!same) {
        throw new StreamFormatError(
          "Cannot load a second, different block list",
          { offset: 0 },
        );
      }
      return;
    }
    const total = blocks.reduce((sum, b) => sum + b.usedLength, 0);
    const limit = this.#options.maxRamBytes ?? 16 * 1024 ** 3;
    if (total > limit) {
      throw new RangeError(
        `Cannot create a guest of ${total} bytes: the limit is ${limit} bytes (maxRamBytes)`,
      );
    }
    const create = this.#options.createGuest ??
      ((list, name) => defaultGuest(list, name, this.#clock));
    this.#guest = create(blocks, machine);
  }
}

/** livemig's own streams get a simulated guest; others a memory-only one. */
function defaultGuest(
  blocks: readonly RamBlockInfo[],
  machine: string | undefined,
  clock: Clock,
): MigratableGuest {
  if (machine === "livemig" && blocks.length === 1) {
    return new SimulatedGuest({
      ramBytes: blocks[0]!.usedLength,
      blockName: blocks[0]!.idstr,
      running: false,
      clock,
    });
  }
  const memory = new GuestMemory(
    blocks.map((b) => ({ idstr: b.idstr, size: b.usedLength })),
  );
  const guest = new HostedGuest({ memory });
  void guest.pause();
  return guest;
}
