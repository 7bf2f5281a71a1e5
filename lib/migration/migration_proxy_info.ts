/**
 * What a {@linkcode MigrationProxy} reports, shaped like QEMU's
 * `query-migrate` reply.
 *
 * @module
 */

import type { DeviceTailSummary } from "../wire/migration_decoder.ts";
import type { XbzrleCacheStats } from "../ram/xbzrle_page_encoder.ts";
import type { MigrationStatus } from "./migration_state.ts";
import type { ReencodedPages } from "./reencode_stream.ts";

/** What went through one direction of a {@linkcode MigrationProxy}. */
export interface ProxyStreamStats extends ReencodedPages {
  /** Bytes. */
  transferred: number;
  /** `normal` × the page size. */
  "normal-bytes": number;
}

/**
 * What the proxy did, shaped like QEMU's `query-migrate` reply.
 *
 * @example Usage
 * ```ts
 * import { MigrationProxy, type MigrationProxyInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const info: MigrationProxyInfo = new MigrationProxy().query();
 * assert.equal(info.status, "none");
 * assert.equal(info["max-bandwidth"], 0);
 * ```
 */
export interface MigrationProxyInfo {
  /** `none`, `setup` (waiting), `active`, `completed` or `failed`. */
  status: MigrationStatus;
  /** Milliseconds since the source connected (running) or until the end. */
  "total-time"?: number;
  /** Average Mbit/s sent to the destination. */
  mbps?: number;
  /** The limit applied to what is sent, bytes per second (0: none). */
  "max-bandwidth": number;
  /** The limit applied once in postcopy, bytes per second (0: none). */
  "max-postcopy-bandwidth": number;
  /**
   * Page requests (REQ_PAGES_ID, REQ_PAGES) the destination sent on the
   * return path: its postcopy page faults, as QEMU's
   * `ram.postcopy-requests` counts them.
   */
  "postcopy-requests"?: number;
  /** What came from the source. */
  received?: ProxyStreamStats;
  /** What went to the destination. */
  sent?: ProxyStreamStats;
  /** Complete rounds over RAM seen in the source's stream. */
  rounds?: number;
  /** The re-encoder's XBZRLE cache counters, when XBZRLE is on. */
  "xbzrle-cache"?: XbzrleCacheStats;
  /** The device tail, once it passed (validated through the vmdesc). */
  "device-tail"?: DeviceTailSummary;
  /** The return path: bytes and messages relayed to the source. */
  "return-path"?: {
    /** Bytes relayed. */
    transferred: number;
    /** Messages seen. */
    messages: number;
    /** The value of the destination's SHUT, once sent (0 = loaded). */
    shut?: number;
  };
  /** What went wrong, once failed. */
  "error-desc"?: string;
  /** Byte offset in the source's stream where decoding failed, if it did. */
  "error-offset"?: number;
}
