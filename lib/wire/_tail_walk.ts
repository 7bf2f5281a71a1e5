/**
 * Walking a buffered device tail item by item: each FULL section through
 * its description (vmdesc.ts `walkVmstate`), commands by their length,
 * then EOF and the vmdesc trailer, which must end the tail exactly:
 *
 * ```
 * (0x04 be32 id, u8 n idstr, be32 instance, be32 version, body, [0x7e be32 id]
 *  | 0x08 be16 cmd, be16 len, payload[len])*
 * 0x00 EOF
 * [0x06 be32 len, len bytes of JSON]
 * ```
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { QEMU_VM } from "./qemu_vm.ts";
import { type VmdescDevice, walkVmstate } from "./vmdesc.ts";

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

/** What {@linkcode walkTail} found. */
export interface TailWalk {
  /** The items walked, in order. */
  items: TailItem[];
  /** Where walking stopped, in the tail. */
  stoppedAt: number;
  /** Whether the walk reached the end of the tail through EOF. */
  complete: boolean;
}

/**
 * Walks a buffered tail from its start. Stops at the first section it has
 * no description for (`complete: false`), at EOF + vmdesc, or at the end of
 * the buffer.
 *
 * @returns The items walked, where walking stopped, and whether it reached
 *   the end of the tail.
 */
export function walkTail(tail: Uint8Array, options: WalkTailOptions): TailWalk {
  const walker = new TailWalker(tail, options);
  let pos = 0;
  while (pos < tail.byteLength) {
    const type = tail[pos]!;
    if (type === QEMU_VM.EOF) return walker.eof(pos);
    let next: number | undefined;
    if (type === QEMU_VM.SECTION_FULL) {
      next = walker.section(pos);
    } else if (type === QEMU_VM.COMMAND) {
      next = walker.command(pos);
    } else {
      walker.fail(
        pos,
        `byte 0x${
          type.toString(16).padStart(2, "0")
        } starts no section, command or EOF`,
      );
    }
    if (next === undefined) {
      return { items: walker.items, stoppedAt: pos, complete: false };
    }
    pos = next;
  }
  return { items: walker.items, stoppedAt: pos, complete: false };
}

/** Walks the items of one tail, keeping the list and the vmdesc cursor. */
class TailWalker {
  readonly #tail: Uint8Array;
  readonly #options: WalkTailOptions;
  /** The next description to try first: sections come in vmdesc order. */
  #cursor = 0;
  readonly items: TailItem[] = [];

  constructor(tail: Uint8Array, options: WalkTailOptions) {
    this.#tail = tail;
    this.#options = options;
  }

  fail(at: number, what: string): never {
    const offset = this.#options.baseOffset + at;
    throw new StreamFormatError(
      `Cannot walk device state at offset ${offset}: ${what}`,
      { offset },
    );
  }

  /**
   * Walks the FULL section at `at` through its description; returns where
   * the next item starts, or `undefined` when it has no description.
   */
  section(at: number): number | undefined {
    const tail = this.#tail;
    if (at + 6 > tail.byteLength) {
      this.fail(at, "a section header is cut short");
    }
    const idLength = tail[at + 5]!;
    const bodyStart = at + 6 + idLength + 8;
    if (bodyStart > tail.byteLength) {
      this.fail(at, "a section header is cut short");
    }
    const sectionId = be32(tail, at + 1);
    const idstr = TEXT.decode(tail.subarray(at + 6, at + 6 + idLength));
    const instanceId = be32(tail, at + 6 + idLength);
    const versionId = be32(tail, at + 10 + idLength);
    if (idstr === "ram") this.fail(at, 'a FULL section for "ram"');
    const device = this.#describe(idstr, instanceId);
    if (device === undefined) return undefined;
    const bodyEnd = walkVmstate(tail, bodyStart, device, {
      baseOffset: this.#options.baseOffset,
    }).end;
    const next = this.#options.footers
      ? this.#footer(bodyEnd, sectionId, idstr)
      : bodyEnd;
    this.items.push({
      kind: "section",
      at,
      sectionId,
      idstr,
      instanceId,
      versionId,
      bodyStart,
      bodyEnd,
    });
    return next;
  }

  /** Walks the command at `at`; returns where the next item starts. */
  command(at: number): number {
    const tail = this.#tail;
    if (at + 5 > tail.byteLength) {
      this.fail(at, "a command header is cut short");
    }
    const cmd = (tail[at + 1]! << 8) | tail[at + 2]!;
    const length = (tail[at + 3]! << 8) | tail[at + 4]!;
    if (cmd === 7) this.fail(at, "a PACKAGED command inside device state");
    if (at + 5 + length > tail.byteLength) {
      this.fail(at, "a command payload is cut short");
    }
    this.items.push({
      kind: "command",
      at,
      cmd,
      payloadStart: at + 5,
      payloadEnd: at + 5 + length,
    });
    return at + 5 + length;
  }

  /** Walks EOF at `at` and the vmdesc after it, which must end the tail. */
  eof(at: number): TailWalk {
    const tail = this.#tail;
    const items = this.items;
    items.push({ kind: "eof", at });
    const pos = at + 1;
    if (pos === tail.byteLength) {
      return { items, stoppedAt: pos, complete: true };
    }
    if (tail[pos] !== QEMU_VM.VMDESCRIPTION || pos + 5 > tail.byteLength) {
      this.fail(pos, "EOF is followed by something other than VMDESCRIPTION");
    }
    const length = be32(tail, pos + 1);
    if (pos + 5 + length !== tail.byteLength) {
      this.fail(
        pos,
        `the vmdesc length ${length} does not reach the end of the stream exactly`,
      );
    }
    items.push({ kind: "vmdesc", at: pos, jsonStart: pos + 5 });
    return { items, stoppedAt: tail.byteLength, complete: true };
  }

  #describe(idstr: string, instanceId: number): VmdescDevice | undefined {
    const devices = this.#options.devices;
    const matches = (d: VmdescDevice) =>
      d.name === idstr && d.instance_id === instanceId;
    let index = devices.findIndex((d, i) => i >= this.#cursor && matches(d));
    if (index < 0) index = devices.findIndex(matches);
    if (index < 0) return undefined;
    this.#cursor = index + 1;
    return devices[index];
  }

  #footer(at: number, sectionId: number, idstr: string): number {
    const tail = this.#tail;
    if (at + 5 > tail.byteLength) {
      this.fail(at, "a section footer is cut short");
    }
    if (tail[at] !== QEMU_VM.SECTION_FOOTER) {
      this.fail(
        at,
        `section "${idstr}" is not followed by a footer (0x7e) but by 0x${
          tail[at]!.toString(16).padStart(2, "0")
        }`,
      );
    }
    if (be32(tail, at + 1) !== sectionId) {
      this.fail(at, `the footer of section "${idstr}" names another section`);
    }
    return at + 5;
  }
}

const TEXT = new TextDecoder();

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}
