/**
 * Device tails: the bytes from the first FULL section to the end of a
 * precopy stream (device sections, EOF, VMDESCRIPTION). They carry no
 * lengths, so they are delimited by walking them through the vmdesc
 * trailer, which sits at their very end:
 *
 * ```
 * (0x04 be32 id, u8 n idstr, be32 instance, be32 version, body, 0x7e be32 id)*
 * 0x00 EOF
 * 0x06 be32 len, len bytes of JSON   ← found from the end: the length covers
 *                                      exactly the rest, and the JSON parses
 * ```
 *
 * A live destination cannot wait for the connection to close (a source
 * with a return path keeps it open until the destination says SHUT), so
 * {@linkcode DeviceTailCollector} recognises the end as it happens;
 * _tail_walk.ts walks a buffered tail.
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import {
  type DecodeCommandOptions,
  decodeCommandRecord,
} from "./_command_record.ts";
import type { DeviceTailSummary } from "./migration_decoder.ts";
import type { MigrationRecord } from "./migration_record.ts";
import type { DeviceStateMode } from "./migration_stream_kind.ts";
import { QEMU_VM } from "./qemu_vm.ts";
import { type TailItem, walkTail } from "./_tail_walk.ts";
import {
  parseVmdesc,
  type VmdescDevice,
  type VmdescDocument,
} from "./vmdesc.ts";

/** Options for {@linkcode DeviceTailCollector}. */
export interface DeviceTailCollectorOptions {
  /** Stream offset of the first tail byte. */
  baseOffset: number;
  /** Most bytes buffered; past it the tail is only counted. */
  maxBytes: number;
  /** Largest vmdesc accepted. */
  maxVmdescBytes: number;
  /** Device descriptions known up front (livemig's own device). */
  layouts: readonly VmdescDevice[];
  /** Whether sections end with a footer. */
  footers: boolean;
}

/** What {@linkcode DeviceTailCollector.push} made of a chunk. */
export interface TailPush {
  /**
   * Bytes of the chunk that belong to the tail: all of them, or those up
   * to the end of the vmdesc trailer once it is recognised.
   */
  taken: number;
  /** Whether the tail is now complete. */
  complete: boolean;
}

/**
 * Buffers a device tail as it arrives and tells when it is complete: at
 * the first offset where a vmdesc trailer ends whose length covers exactly
 * the bytes before it, whose JSON parses, and through which the whole tail
 * walks to an EOF right before it. Every such end inside a chunk is
 * checked, in order, so the tail ends at the same byte however the bytes
 * are chunked; what follows that end is not part of the tail.
 */
export class DeviceTailCollector {
  readonly #options: DeviceTailCollectorOptions;
  #buffer = new Uint8Array(64 * 1024);
  #length = 0;
  #scanned = 1; // next candidate position p for tail[p] = 0x06
  #ends = new Map<number, number[]>(); // end offset → candidate positions
  #overflowed = false;
  #vmdesc: VmdescDocument | undefined;
  #items: TailItem[] | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options Where the tail starts and the limits to hold.
   */
  constructor(options: DeviceTailCollectorOptions) {
    this.#options = options;
  }

  /** Bytes received so far. */
  get length(): number {
    return this.#length;
  }

  /** Whether the tail grew past `maxBytes` (it is then only counted). */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** The buffered tail. */
  get bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /** The vmdesc, once the tail is complete. */
  get vmdesc(): VmdescDocument | undefined {
    return this.#vmdesc;
  }

  /** The walked items, once the tail is complete. */
  get items(): TailItem[] | undefined {
    return this.#items;
  }

  /**
   * Adds bytes, up to the end of the tail when it lies in `chunk`.
   *
   * @param chunk The next bytes of the stream.
   * @returns How many of them belong to the tail, and whether it is now
   *   complete.
   * @throws {StreamFormatError} If a vmdesc trailer arrived but the device
   *   sections do not walk through it.
   */
  push(chunk: Uint8Array): TailPush {
    const size = chunk.byteLength;
    if (this.#overflowed) {
      this.#length += size;
      return { taken: size, complete: false };
    }
    const before = this.#length;
    const fits = Math.min(size, this.#options.maxBytes - before);
    this.#reserve(fits);
    this.#buffer.set(chunk.subarray(0, fits), before);
    this.#length += fits;
    this.#scan();
    const end = this.#completeIn(before);
    if (end !== undefined) {
      this.#length = end;
      return { taken: end - before, complete: true };
    }
    if (fits < size) {
      this.#overflowed = true;
      this.#length += size - fits;
      this.#buffer = new Uint8Array(0);
      this.#ends.clear();
    }
    return { taken: size, complete: false };
  }

  /**
   * Walks what arrived, for a stream that ended without a recognised
   * vmdesc; device sections without a description stop the walk.
   *
   * @returns The items walked and whether the walk reached the end.
   */
  finish(): { items: TailItem[]; complete: boolean } {
    if (this.#overflowed) return { items: [], complete: false };
    const walk = walkTail(this.bytes, {
      baseOffset: this.#options.baseOffset,
      devices: this.#options.layouts,
      footers: this.#options.footers,
    });
    return { items: walk.items, complete: walk.complete };
  }

  /** Notes every possible trailer start among the bytes new since the last scan. */
  #scan(): void {
    const bytes = this.#buffer;
    for (; this.#scanned + 5 < this.#length; this.#scanned++) {
      const p = this.#scanned;
      if (
        bytes[p] === QEMU_VM.VMDESCRIPTION && bytes[p - 1] === QEMU_VM.EOF &&
        bytes[p + 5] === 0x7b
      ) {
        // The "{" at p + 5 is the JSON's first byte: a length of 0 is no
        // trailer. Every end noted here lies past the bytes pushed before.
        const length = be32(bytes, p + 1);
        if (length >= 1 && length <= this.#options.maxVmdescBytes) {
          const end = p + 5 + length;
          const starts = this.#ends.get(end);
          if (starts === undefined) this.#ends.set(end, [p]);
          else starts.push(p);
        }
      }
    }
  }

  /**
   * The first trailer end in `(before, length]` that completes the tail,
   * trying ends in order and, for one end, trailer starts in order. Ends
   * checked are forgotten.
   */
  #completeIn(before: number): number | undefined {
    const due = [...this.#ends.keys()]
      .filter((end) => end > before && end <= this.#length)
      .sort((a, b) => a - b);
    for (const end of due) {
      const starts = this.#ends.get(end)!;
      this.#ends.delete(end);
      for (const start of starts) {
        if (this.#tryComplete(start, end)) return end;
      }
    }
    return undefined;
  }

  #tryComplete(candidate: number, end: number): boolean {
    const tail = this.#buffer.subarray(0, end);
    let document: VmdescDocument;
    try {
      document = parseVmdesc(
        tail.subarray(candidate + 5),
        this.#options.baseOffset + candidate + 5,
      );
    } catch {
      return false; // JSON that does not parse: not the trailer after all
    }
    const walk = walkTail(tail, {
      baseOffset: this.#options.baseOffset,
      devices: [...document.devices, ...this.#options.layouts],
      footers: this.#options.footers,
    });
    if (!walk.complete) {
      const at = this.#options.baseOffset + walk.stoppedAt;
      throw new StreamFormatError(
        `Cannot walk device state at offset ${at}: the vmdesc trailer has no description for the section there`,
        { offset: at },
      );
    }
    this.#vmdesc = document;
    this.#items = walk.items;
    return true;
  }

  #reserve(size: number): void {
    if (this.#length + size <= this.#buffer.byteLength) return;
    let capacity = this.#buffer.byteLength * 2;
    while (capacity < this.#length + size) capacity *= 2;
    const next = new Uint8Array(capacity);
    next.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = next;
  }
}

/** Options for {@linkcode collectDeviceTail}. */
export interface CollectDeviceTailOptions {
  /** Whether device sections are passed on as raw bytes or walked. */
  mode: DeviceStateMode;
  /** Most bytes buffered in `"walk"` mode. */
  maxBytes: number;
  /** Largest vmdesc accepted. */
  maxVmdescBytes: number;
  /** Device descriptions known up front (livemig's own device). */
  layouts: readonly VmdescDevice[];
  /** Whether sections end with a footer. */
  footers: boolean;
  /** Whether the tail ends with a vmdesc trailer. */
  vmdesc: boolean;
  /** Whether the stream must end with EOF. */
  eofRequired: boolean;
}

/** A device tail read to its end. */
export interface CollectedTail {
  /** Where the tail lies and whether it was walked to EOF. */
  summary: DeviceTailSummary;
  /** The vmdesc trailer, when it was recognised. */
  vmdesc: VmdescDocument | undefined;
  /** The buffered tail (empty in `"opaque"` mode past `maxBytes`). */
  bytes: Uint8Array;
  /** The walked items. */
  items: readonly TailItem[];
  /** Whether the tail ended with a recognised vmdesc trailer. */
  complete: boolean;
}

/**
 * Reads the device tail to its end: the vmdesc trailer when one is
 * expected (a live source that keeps the connection open does not stall
 * the decoder), else the end of the stream. In `"opaque"` mode every chunk
 * is yielded as a `device-tail` record as it arrives.
 *
 * @param reader The bytes, positioned at the first FULL section.
 * @param options What the tail looks like and the limits to hold.
 * @returns The tail, once read.
 * @throws {StreamFormatError} If the tail does not walk through its vmdesc,
 *   or exceeds `maxBytes` in `"walk"` mode.
 * @throws {UnexpectedEndOfStreamError} If the stream ends before the
 *   expected vmdesc or EOF.
 */
export async function* collectDeviceTail(
  reader: ByteReader,
  options: CollectDeviceTailOptions,
): AsyncGenerator<MigrationRecord[], CollectedTail> {
  const offset = reader.offset;
  const collector = new DeviceTailCollector({
    baseOffset: offset,
    maxBytes: options.maxBytes,
    maxVmdescBytes: options.maxVmdescBytes,
    layouts: options.layouts,
    footers: options.footers,
  });
  const opaque = options.mode === "opaque";
  let complete = false;
  while (!complete) {
    if (reader.buffered === 0 && !await reader.ensure(1)) break;
    const pushed = collector.push(reader.peek(reader.buffered));
    complete = pushed.complete;
    const chunk = reader.take(pushed.taken);
    if (opaque) yield [{ type: "device-tail", data: chunk }];
  }
  if (!opaque && collector.overflowed) {
    throw new StreamFormatError(
      `Cannot walk device state at offset ${offset}: the device tail exceeds the limit of ${options.maxBytes} bytes`,
      { offset },
    );
  }
  const walk = complete
    ? { items: collector.items ?? [], complete: true }
    : finishTail(collector, offset, options);
  return {
    summary: { offset, bytes: collector.length, validated: walk.complete },
    vmdesc: collector.vmdesc,
    bytes: collector.bytes,
    items: walk.items,
    complete,
  };
}

/** Options for {@linkcode tailRecords}. */
export interface TailRecordsOptions {
  /** Whether sections end with a footer. */
  footers: boolean;
  /** What commands in the tail are checked against. */
  command: Pick<DecodeCommandOptions, "pageSize" | "blocks">;
}

/**
 * The records of a walked tail: each device section as `section-full`,
 * `device-state` and `section-footer`, commands, EOF and vmdesc, and what
 * could not be walked as one `device-tail`.
 *
 * @param tail The tail, read.
 * @param options Footers, and what commands are checked against.
 * @returns The records.
 * @throws {StreamFormatError} If a command or the vmdesc is not valid.
 */
export function tailRecords(
  tail: CollectedTail,
  options: TailRecordsOptions,
): MigrationRecord[] {
  const { bytes } = tail;
  const offset = tail.summary.offset;
  const records: MigrationRecord[] = [];
  let walked = 0;
  for (const item of tail.items) {
    if (item.kind === "section") {
      const { sectionId, idstr, instanceId, versionId } = item;
      records.push({
        type: "section-full",
        sectionId,
        idstr,
        instanceId,
        versionId,
      }, {
        type: "device-state",
        sectionId,
        idstr,
        instanceId,
        data: bytes.slice(item.bodyStart, item.bodyEnd),
      });
      if (options.footers) records.push({ type: "section-footer", sectionId });
      walked = item.bodyEnd + (options.footers ? 5 : 0);
    } else if (item.kind === "command") {
      records.push(decodeCommandRecord(
        item.cmd,
        bytes.subarray(item.payloadStart, item.payloadEnd),
        {
          ...options.command,
          offset: offset + item.at,
          payloadOffset: offset + item.payloadStart,
        },
      ));
      walked = item.payloadEnd;
    } else if (item.kind === "eof") {
      records.push({ type: "eof" });
      walked = item.at + 1;
    } else {
      const data = bytes.slice(item.jsonStart);
      const document = parseVmdesc(data, offset + item.jsonStart);
      records.push({ type: "vmdesc", data, document });
      walked = bytes.byteLength;
    }
  }
  if (walked < bytes.byteLength) {
    records.push({ type: "device-tail", data: bytes.slice(walked) });
  }
  return records;
}

/**
 * Walks a tail that ended without a recognised vmdesc: an error when one
 * was expected, or when the walk reached the end without EOF.
 */
function finishTail(
  collector: DeviceTailCollector,
  offset: number,
  options: CollectDeviceTailOptions,
): { items: readonly TailItem[]; complete: boolean } {
  if (options.vmdesc && !collector.overflowed) {
    throw new UnexpectedEndOfStreamError(1, {
      offset: offset + collector.length,
      what:
        "the vmdesc trailer (the stream ended inside the device state, or its trailer is damaged)",
    });
  }
  const walk = collector.finish();
  // A tail walked to its end without EOF was cut short; one that could
  // not be walked (no vmdesc, no layout) cannot be judged.
  if (
    options.eofRequired && walk.complete &&
    !walk.items.some((item) => item.kind === "eof")
  ) {
    throw new UnexpectedEndOfStreamError(1, {
      offset: offset + collector.length,
      what: "EOF (the device state ended without it)",
    });
  }
  return walk;
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}
