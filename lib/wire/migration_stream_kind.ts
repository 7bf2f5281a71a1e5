/**
 * The kinds of migration stream a {@linkcode MigrationDecoder} reads, each
 * a preset of the stream's shape.
 *
 * | kind | starts with | ends with | after the end | device sections |
 * |---|---|---|---|---|
 * | `live` | header | EOF [vmdesc] | not read (the return path keeps the connection open) | raw |
 * | `file` | header | EOF [vmdesc] | nothing may follow | walked |
 * | `prefix` | header | anywhere between sections, or EOF [vmdesc] | not checked | walked |
 * | `packaged` | a section or command | anywhere between sections | not checked | walked |
 * | `postcopy-recovery` | a section or command | EOF [vmdesc] | not checked | walked |
 * | `postcopy-preempt` | a RAM record | EOS | not checked | none |
 *
 * After a postcopy EOF no vmdesc is expected (QEMU writes none); the
 * `vmdesc` option says whether a precopy EOF is followed by one (QEMU's
 * `suppress-vmdesc` machine property), `deviceState` whether device
 * sections are passed on raw or walked through their descriptions.
 *
 * @module
 */

/** How device (FULL) sections are handled. */
export type DeviceStateMode = "opaque" | "walk";

/**
 * What kind of stream a decoder reads:
 *
 * - `"live"`: a whole stream off a connection (QEMU's `migrate`), from
 *   its header to EOF and the vmdesc trailer. Decoding ends there, without
 *   waiting for the connection to close, and what follows is left unread:
 *   QEMU's destination too stops reading after the vmdesc.
 * - `"file"`: a whole stream in a file or pipe (`exec:`, `file:`); nothing
 *   may follow its end (a byte there fails at its offset, right after the
 *   trailer).
 * - `"prefix"`: the first part of a stream, from its header to wherever
 *   the bytes end between two sections; for reading the head of a file.
 * - `"packaged"`: the blob of a PACKAGED command, a stream without header
 *   or EOF (LISTEN, device sections, PING, RUN).
 * - `"postcopy-recovery"`: the stream of a postcopy recovery, which
 *   continues a stream cut short: no header; RAM blocks and sections are
 *   known from before.
 * - `"postcopy-preempt"`: QEMU's postcopy-preempt channel, RAM records
 *   only, up to an EOS.
 */
export type MigrationStreamKind =
  | "live"
  | "file"
  | "prefix"
  | "packaged"
  | "postcopy-recovery"
  | "postcopy-preempt";

/** The shape a {@linkcode MigrationStreamKind} gives a stream. */
export interface MigrationStreamShape {
  /** Whether the stream starts with the "QEVM" header (and CONFIGURATION). */
  header: boolean;
  /** Whether the stream is RAM records only, up to an EOS. */
  ramOnly: boolean;
  /** Whether the stream must end with EOF. */
  eofRequired: boolean;
  /** Whether nothing may follow the end of the stream. */
  checkEnd: boolean;
  /** Whether a precopy EOF is followed by a vmdesc trailer, by default. */
  vmdesc: boolean;
  /** How device sections are handled, by default. */
  deviceState: DeviceStateMode;
}

/**
 * The shape of each kind of stream.
 *
 * @example Usage
 * ```ts
 * import { MIGRATION_STREAM_KINDS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MIGRATION_STREAM_KINDS.file.checkEnd, true);
 * assert.equal(MIGRATION_STREAM_KINDS.packaged.header, false);
 * ```
 */
export const MIGRATION_STREAM_KINDS: {
  readonly [K in MigrationStreamKind]: Readonly<MigrationStreamShape>;
} = {
  live: {
    header: true,
    ramOnly: false,
    eofRequired: true,
    checkEnd: false,
    vmdesc: true,
    deviceState: "opaque",
  },
  file: {
    header: true,
    ramOnly: false,
    eofRequired: true,
    checkEnd: true,
    vmdesc: true,
    deviceState: "walk",
  },
  prefix: {
    header: true,
    ramOnly: false,
    eofRequired: false,
    checkEnd: false,
    vmdesc: true,
    deviceState: "walk",
  },
  packaged: {
    header: false,
    ramOnly: false,
    eofRequired: false,
    checkEnd: false,
    vmdesc: false,
    deviceState: "walk",
  },
  "postcopy-recovery": {
    header: false,
    ramOnly: false,
    eofRequired: true,
    checkEnd: false,
    vmdesc: true,
    deviceState: "walk",
  },
  "postcopy-preempt": {
    header: false,
    ramOnly: true,
    eofRequired: false,
    checkEnd: false,
    vmdesc: false,
    deviceState: "walk",
  },
};
