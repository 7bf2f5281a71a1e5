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
 * {@linkcode DeviceTailCollector} recognises the end as it happens.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { QEMU_VM } from "./qemu_vm.ts";
import {
  parseVmdesc,
  type VmdescDevice,
  type VmdescDocument,
  walkVmstate,
} from "./vmdesc.ts";

/** One walked item of a device tail. */
export type TailItem =
  | {
    kind: "section";
    /** Offset of the 0x04 byte in the tail. */
    at: number;
    sectionId: number;
    idstr: string;
    instanceId: number;
    versionId: number;
    /** Body start and end in the tail. */
    bodyStart: number;
    bodyEnd: number;
  }
  | {
    kind: "command";
    at: number;
    cmd: number;
    payloadStart: number;
    payloadEnd: number;
  }
  | { kind: "eof"; at: number }
  | { kind: "vmdesc"; at: number; jsonStart: number };

/** Options for {@linkcode walkTail}. */
export interface WalkTailOptions {
  /** Stream offset of `tail[0]`, for errors. */
  baseOffset: number;
  /** Descriptions to walk device bodies with. */
  devices: readonly VmdescDevice[];
  /** Whether sections end with a footer. */
  footers: boolean;
}

/**
 * Walks a buffered tail from its start. Stops at the first section it has
 * no description for (`complete: false`), at EOF + vmdesc, or at the end of
 * the buffer.
 *
 * @returns The items walked, where walking stopped, and whether it reached
 *   the end of the tail.
 */
export function walkTail(
  tail: Uint8Array,
  options: WalkTailOptions,
): { items: TailItem[]; stoppedAt: number; complete: boolean } {
  const { baseOffset, devices, footers } = options;
  const items: TailItem[] = [];
  let pos = 0;
  let cursor = 0;
  const fail = (at: number, what: string): never => {
    throw new StreamFormatError(
      `Cannot walk device state at offset ${baseOffset + at}: ${what}`,
      { offset: baseOffset + at },
    );
  };
  while (pos < tail.byteLength) {
    const at = pos;
    const type = tail[pos]!;
    if (type === QEMU_VM.SECTION_FULL) {
      if (pos + 6 > tail.byteLength) fail(at, "a section header is cut short");
      const idLength = tail[pos + 5]!;
      const bodyStart = pos + 6 + idLength + 8;
      if (bodyStart > tail.byteLength) {
        fail(at, "a section header is cut short");
      }
      const sectionId = be32(tail, pos + 1);
      const idstr = TEXT.decode(tail.subarray(pos + 6, pos + 6 + idLength));
      const instanceId = be32(tail, pos + 6 + idLength);
      const versionId = be32(tail, pos + 10 + idLength);
      if (idstr === "ram") fail(at, 'a FULL section for "ram"');
      let index = devices.findIndex((d, i) =>
        i >= cursor && d.name === idstr && d.instance_id === instanceId
      );
      if (index < 0) {
        index = devices.findIndex((d) =>
          d.name === idstr && d.instance_id === instanceId
        );
      }
      if (index < 0) return { items, stoppedAt: at, complete: false };
      cursor = index + 1;
      const bodyEnd = walkVmstate(tail, bodyStart, devices[index]!, {
        baseOffset,
      }).end;
      pos = bodyEnd;
      if (footers) {
        if (pos + 5 > tail.byteLength) {
          fail(pos, "a section footer is cut short");
        }
        if (tail[pos] !== QEMU_VM.SECTION_FOOTER) {
          fail(
            pos,
            `section "${idstr}" is not followed by a footer (0x7e) but by 0x${
              tail[pos]!.toString(16).padStart(2, "0")
            }`,
          );
        }
        if (be32(tail, pos + 1) !== sectionId) {
          fail(pos, `the footer of section "${idstr}" names another section`);
        }
        pos += 5;
      }
      items.push({
        kind: "section",
        at,
        sectionId,
        idstr,
        instanceId,
        versionId,
        bodyStart,
        bodyEnd,
      });
    } else if (type === QEMU_VM.COMMAND) {
      if (pos + 5 > tail.byteLength) fail(at, "a command header is cut short");
      const cmd = (tail[pos + 1]! << 8) | tail[pos + 2]!;
      const length = (tail[pos + 3]! << 8) | tail[pos + 4]!;
      if (cmd === 7) fail(at, "a PACKAGED command inside device state");
      if (pos + 5 + length > tail.byteLength) {
        fail(at, "a command payload is cut short");
      }
      items.push({
        kind: "command",
        at,
        cmd,
        payloadStart: pos + 5,
        payloadEnd: pos + 5 + length,
      });
      pos += 5 + length;
    } else if (type === QEMU_VM.EOF) {
      items.push({ kind: "eof", at });
      pos++;
      if (pos === tail.byteLength) {
        return { items, stoppedAt: pos, complete: true };
      }
      if (tail[pos] !== QEMU_VM.VMDESCRIPTION || pos + 5 > tail.byteLength) {
        fail(pos, "EOF is followed by something other than VMDESCRIPTION");
      }
      const length = be32(tail, pos + 1);
      if (pos + 5 + length !== tail.byteLength) {
        fail(
          pos,
          `the vmdesc length ${length} does not reach the end of the stream exactly`,
        );
      }
      items.push({ kind: "vmdesc", at: pos, jsonStart: pos + 5 });
      return { items, stoppedAt: tail.byteLength, complete: true };
    } else {
      fail(
        at,
        `byte 0x${
          type.toString(16).padStart(2, "0")
        } starts no section, command or EOF`,
      );
    }
  }
  return { items, stoppedAt: pos, complete: false };
}

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

/**
 * Buffers a device tail as it arrives and tells when it is complete: when
 * the bytes received so far end with a vmdesc trailer whose length covers
 * exactly the rest, whose JSON parses, and through which the whole tail
 * walks to an EOF right before it.
 */
export class DeviceTailCollector {
  readonly #options: DeviceTailCollectorOptions;
  #buffer = new Uint8Array(64 * 1024);
  #length = 0;
  #scanned = 1; // next candidate position p for tail[p] = 0x06
  #ends = new Map<number, number>(); // end offset → candidate position
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
   * Adds bytes.
   *
   * @param chunk The next bytes of the tail.
   * @returns Whether the tail is now complete.
   * @throws {StreamFormatError} If a vmdesc trailer arrived but the device
   *   sections do not walk through it.
   */
  push(chunk: Uint8Array): boolean {
    if (this.#overflowed) {
      this.#length += chunk.byteLength;
      return false;
    }
    if (this.#length + chunk.byteLength > this.#options.maxBytes) {
      this.#overflowed = true;
      this.#length += chunk.byteLength;
      this.#buffer = new Uint8Array(0);
      return false;
    }
    this.#reserve(chunk.byteLength);
    this.#buffer.set(chunk, this.#length);
    this.#length += chunk.byteLength;
    const bytes = this.#buffer;
    for (; this.#scanned + 5 < this.#length; this.#scanned++) {
      const p = this.#scanned;
      if (
        bytes[p] === QEMU_VM.VMDESCRIPTION && bytes[p - 1] === QEMU_VM.EOF &&
        bytes[p + 5] === 0x7b
      ) {
        const length = be32(bytes, p + 1);
        if (length <= this.#options.maxVmdescBytes) {
          this.#ends.set(p + 5 + length, p);
        }
      }
    }
    const candidate = this.#ends.get(this.#length);
    if (candidate === undefined) return false;
    return this.#tryComplete(candidate);
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

  #tryComplete(candidate: number): boolean {
    let document: VmdescDocument;
    try {
      document = parseVmdesc(
        this.bytes.subarray(candidate + 5),
        this.#options.baseOffset + candidate + 5,
      );
    } catch {
      return false; // JSON that does not parse: not the trailer after all
    }
    const walk = walkTail(this.bytes, {
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

const TEXT = new TextDecoder();

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}
