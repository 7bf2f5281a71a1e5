/**
 * QEMU's migration stream as typed records: what the decoder produces and
 * the encoder consumes. Decoding a real QEMU stream and encoding its records
 * again gives back the identical bytes.
 *
 * ```
 * stream   := header [configuration] item*
 * header   := be32 "QEVM" be32 3
 * item     := section-start ram-record* section-footer      (0x01, "ram" only)
 *           | section-part  ram-record* section-footer      (0x02)
 *           | section-end   ram-record* section-footer      (0x03)
 *           | section-full  device-state section-footer     (0x04, walked through vmdesc)
 *           | device-tail+                                  (0x04 onwards, opaque)
 *           | command                                       (0x08)
 *           | eof [vmdesc]                                  (0x00, 0x06)
 * ```
 *
 * @module
 */

import type { RamRecord } from "../ram/ram_record.ts";
import type { VmdescDocument } from "./vmdesc.ts";

/** The stream header: magic "QEVM" and the format version. */
export interface HeaderRecord {
  /** Discriminant. */
  type: "header";
  /** The format version; QEMU writes 3. */
  version: number;
}

/** The CONFIGURATION section (0x07) that follows the header. */
export interface ConfigurationRecord {
  /** Discriminant. */
  type: "configuration";
  /** The machine type, e.g. `pc-i440fx-7.2`. */
  machine: string;
  /** The `configuration/target-page-bits` subsection, when sent. */
  targetPageBits?: number;
  /** The `configuration/capabilities` subsection, when sent. */
  capabilities?: string[];
  /** The `configuration/uuid` subsection (16 bytes), when sent. */
  uuid?: Uint8Array;
}

/** One discarded byte range of a RAM block. */
export interface DiscardRange {
  /** Byte offset of the range inside the block. */
  start: number;
  /** Length of the range in bytes. */
  length: number;
}

/** A COMMAND record (0x08), one variant per `MIG_CMD_*`. */
export type CommandRecord =
  | { type: "command"; command: "OPEN_RETURN_PATH" }
  | { type: "command"; command: "PING"; value: number }
  | {
    type: "command";
    command: "POSTCOPY_ADVISE";
    /** The OR of every RAM block's page size; absent for the 0-byte form. */
    pageSizeSummary?: number;
    /** The source's target page size; absent for the 0-byte form. */
    targetPageSize?: number;
  }
  | { type: "command"; command: "POSTCOPY_LISTEN" }
  | { type: "command"; command: "POSTCOPY_RUN" }
  | {
    type: "command";
    command: "POSTCOPY_RAM_DISCARD";
    /** The RAM block the ranges belong to. */
    block: string;
    /** The ranges, at most 12 per command when QEMU sends them. */
    ranges: DiscardRange[];
  }
  | {
    type: "command";
    command: "PACKAGED";
    /** The nested stream (no header): LISTEN, device sections, RUN. */
    data: Uint8Array;
  }
  | { type: "command"; command: "ENABLE_COLO" }
  | { type: "command"; command: "POSTCOPY_RESUME" }
  | { type: "command"; command: "RECV_BITMAP"; block: string }
  | { type: "command"; command: "SWITCHOVER_START" };

/** The header of a START (0x01) or FULL (0x04) section. */
export interface SectionStartRecord {
  /** Discriminant. */
  type: "section-start" | "section-full";
  /** The id the source gave the section's handler. */
  sectionId: number;
  /** The device instance name, e.g. `ram` or `0000:00:01.1/ide`. */
  idstr: string;
  /** Distinguishes several instances with the same idstr. */
  instanceId: number;
  /** The device's state version. */
  versionId: number;
}

/** The header of a PART (0x02) or END (0x03) section. */
export interface SectionPartRecord {
  /** Discriminant. */
  type: "section-part" | "section-end";
  /** The id announced by the section's START. */
  sectionId: number;
}

/** The footer (0x7e) that closes every section. */
export interface SectionFooterRecord {
  /** Discriminant. */
  type: "section-footer";
  /** The id of the section it closes. */
  sectionId: number;
}

/**
 * The body of a FULL section, delimited by walking its fields with the
 * vmdesc trailer (or a known layout).
 */
export interface DeviceStateRecord {
  /** Discriminant. */
  type: "device-state";
  /** The section id. */
  sectionId: number;
  /** The device instance name. */
  idstr: string;
  /** The device instance id. */
  instanceId: number;
  /** The body bytes: fields and subsections, without header or footer. */
  data: Uint8Array;
}

/**
 * Device state bytes carried without being delimited: in a live stream
 * everything from the first non-RAM FULL section to the end of the
 * connection, as it arrives.
 */
export interface DeviceTailRecord {
  /** Discriminant. */
  type: "device-tail";
  /** The next bytes of the tail. */
  data: Uint8Array;
}

/** The end of the top-level stream (0x00). */
export interface EofRecord {
  /** Discriminant. */
  type: "eof";
}

/** The VMDESCRIPTION trailer (0x06): JSON describing the device sections. */
export interface VmdescRecord {
  /** Discriminant. */
  type: "vmdesc";
  /** The JSON bytes exactly as sent. */
  data: Uint8Array;
  /** The parsed JSON. */
  document: VmdescDocument;
}

/** Any record of a migration stream. */
export type MigrationRecord =
  | HeaderRecord
  | ConfigurationRecord
  | CommandRecord
  | SectionStartRecord
  | SectionPartRecord
  | SectionFooterRecord
  | DeviceStateRecord
  | DeviceTailRecord
  | EofRecord
  | VmdescRecord
  | RamRecord;
