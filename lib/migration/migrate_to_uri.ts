import { NotSupportedError } from "../errors.ts";
import { openRandomAccessFile } from "../transport/file_transport.ts";
import { connectTransport } from "../transport/open_transport.ts";
import { parseTransportUri } from "../transport/transport_uri.ts";
import type { MigrationInfo } from "./migration_info.ts";
import type { SourceMigration } from "./source_migration.ts";
import type { TlsOptions } from "../transport/tls_transport.ts";

/** Options for {@linkcode migrateToUri}. */
export interface MigrateToUriOptions {
  /**
   * Runs TLS, as a client, on the migration connection and every further
   * one (postcopy preempt), as QEMU's `tls-creds` parameter does.
   *
   * @default {plain, no TLS}
   */
  tls?: TlsOptions;
}

/**
 * Migrates `source` to the destination at `uri`, as QEMU's `migrate URI`
 * does: over a stream (`tcp:`, `unix:`, `exec:`, `file:`), or, when the
 * source has the `mapped-ram` capability, into the mapped-ram file a
 * `file:PATH[,offset=N]` URI names (created if missing, closed at the
 * end). Over a stream, further connections to the same URI carry the
 * postcopy-preempt channel.
 *
 * @example Usage
 * ```ts
 * import {
 *   DestinationMigration,
 *   listenForMigration,
 *   migrateToUri,
 *   ramSha256,
 *   SimulatedGuest,
 *   SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const destination = new DestinationMigration({ autostart: false });
 * const listener = await listenForMigration(destination, "tcp:127.0.0.1:0");
 * const guest = new SimulatedGuest({ ramBytes: 1 << 20, running: false });
 * const [info, loaded] = await Promise.all([
 *   migrateToUri(new SourceMigration(guest), listener.address),
 *   listener.incoming(),
 * ]);
 * await listener.close();
 * assert.equal(info.status, "completed");
 * assert.deepEqual(await ramSha256(loaded.guest.memory), await ramSha256(guest.memory));
 * ```
 *
 * @param source The source, not yet migrating.
 * @param uri Where the destination is.
 * @param options TLS.
 * @returns The final info, status `completed`.
 * @throws {TypeError} If `uri` is malformed, or names no file while the
 *   source has `mapped-ram`.
 * @throws {NotSupportedError} For `vsock:`, `rdma:` and `fd:`; with multifd, for
 *   anything but `tcp:` and `unix:` (QEMU 7.2's messages).
 * @throws {TransportError} If the destination cannot be reached.
 * @throws {MigrationAbortedError} When the migration fails or is cancelled.
 */
export async function migrateToUri(
  source: SourceMigration,
  uri: string,
  options: MigrateToUriOptions = {},
): Promise<MigrationInfo> {
  if (source.capabilities.multifd) {
    const { scheme } = parseTransportUri(uri);
    // QEMU 7.2's words: it has no file: migration, and exec: is one stream.
    if (scheme === "file") {
      throw new NotSupportedError(
        "Parameter 'uri' expects a valid migration protocol",
      );
    }
    if (scheme !== "tcp" && scheme !== "unix") {
      throw new NotSupportedError(
        "multifd is not supported by current protocol",
      );
    }
  }
  if (!source.capabilities["mapped-ram"]) {
    const connect = () =>
      connectTransport(uri, options.tls ? { tls: options.tls } : {});
    return source.migrate(await connect(), { connect });
  }
  const target = parseTransportUri(uri);
  if (target.scheme !== "file") {
    throw new TypeError(
      `Cannot migrate with mapped-ram to "${uri}": it needs a file: URI`,
    );
  }
  const file = await openRandomAccessFile(target.path, { create: true });
  try {
    return await source.migrateToFile(file, { offset: target.offset });
  } finally {
    await file.close();
  }
}
