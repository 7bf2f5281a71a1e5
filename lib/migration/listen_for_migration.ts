import { isMappedRamFile } from "../mapped_ram/is_mapped_ram_file.ts";
import { NotSupportedError } from "../errors.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { openRandomAccessFile } from "../transport/file_transport.ts";
import { listenTransport } from "../transport/open_transport.ts";
import type { TlsOptions } from "../transport/tls_transport.ts";
import {
  type FileTransportUri,
  parseTransportUri,
} from "../transport/transport_uri.ts";
import { acceptMultifdConnections } from "./_multifd_receive.ts";
import type {
  DestinationMigration,
  IncomingResult,
} from "./destination_migration.ts";

/** Options for {@linkcode listenForMigration}. */
export interface ListenForMigrationOptions {
  /**
   * Whether the migration arrives as a mapped-ram file (the destination's
   * `mapped-ram` capability): `uri` must then be a `file:` URI, whose
   * pages are read from their fixed offsets instead of as a stream. When
   * left out, a `file:` URI is loaded as what the file holds (see
   * {@linkcode isMappedRamFile}) and anything else as a stream; when given,
   * a file of the other kind fails the migration.
   *
   * @default {undefined}
   */
  mappedRam?: boolean;
  /**
   * For `tcp:` and `unix:`: milliseconds a read may wait without a byte
   * from the source before the migration fails (see
   * {@linkcode ListenOptions.idleTimeoutMs}); 0 waits forever.
   *
   * @default {0}
   */
  idleTimeoutMs?: number;
  /**
   * Runs TLS, as a server, on every connection (`tcp:` only), as QEMU's
   * `tls-creds` parameter does.
   *
   * @default {plain, no TLS}
   */
  tls?: TlsOptions;
  /**
   * Time source of the idle timeout.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
  /**
   * Called with each connection refused while the migration is in
   * progress: for `tcp:` and `unix:`, a connection beyond the first (and
   * beyond the postcopy-preempt one when the destination expects it) is
   * closed at once.
   */
  onRefused?: (peer: string) => void;
}

/** Where a destination waits for its migration: {@linkcode listenForMigration}. */
export interface IncomingMigrationListener {
  /**
   * Where the source should migrate to: for `tcp:` the bound address
   * (port 0 picks a free port), for a mapped-ram file the URI as given.
   */
  readonly address: string;
  /**
   * How the migration is loaded: as a stream, or from a mapped-ram file's
   * fixed offsets.
   */
  readonly format: "stream" | "mapped-ram";
  /**
   * Loads the migration: accepts the first connection and loads what
   * arrives on it (further connections are the postcopy-preempt channel),
   * or loads the mapped-ram file.
   *
   * @returns The loaded guest and the final info.
   * @throws {MigrationAbortedError} When the stream or file is bad or cut.
   */
  incoming(): Promise<IncomingResult>;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * Makes `destination` wait for a migration at `uri`, as QEMU's
 * `-incoming URI` does: listens on `tcp:` or `unix:` (refusing at once a
 * connection that is not part of the migration), starts an `exec:`
 * command or opens a `file:` stream; a mapped-ram file named by a
 * `file:PATH[,offset=N]` URI is read as one (`format` says which).
 *
 * @example Usage
 * ```ts
 * import {
 *   DestinationMigration,
 *   listenForMigration,
 *   migrateToUri,
 *   SimulatedGuest,
 *   SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile({ suffix: ".mr" });
 * const guest = new SimulatedGuest({ ramBytes: 1 << 20, running: false });
 * const source = new SourceMigration(guest, { capabilities: { "mapped-ram": true } });
 * await migrateToUri(source, `file:${path}`);
 *
 * const destination = new DestinationMigration({ autostart: false });
 * const listener = await listenForMigration(destination, `file:${path}`);
 * assert.equal(listener.address, `file:${path}`);
 * assert.equal(listener.format, "mapped-ram");
 * const loaded = await listener.incoming();
 * await listener.close();
 * assert.equal(loaded.info.status, "completed");
 * await Deno.remove(path);
 * ```
 *
 * @param destination The destination, not yet loading.
 * @param uri Where to wait.
 * @param options Whether the migration is a mapped-ram file.
 * @returns The listener.
 * @throws {TypeError} If `uri` is malformed, or names no file with
 *   `mappedRam`.
 * @throws {NotSupportedError} For `vsock:`, `rdma:` and `fd:`.
 * @throws {TransportError} If `uri` cannot be listened on.
 */
export async function listenForMigration(
  destination: DestinationMigration,
  uri: string,
  options: ListenForMigrationOptions = {},
): Promise<IncomingMigrationListener> {
  destination.listen();
  const multifd = destination.multifd;
  if (multifd !== undefined) refuseMultifdUri(uri);
  const mappedRam = options.mappedRam ?? await holdsMappedRam(uri);
  if (mappedRam) return mappedRamListener(destination, uri);
  const listener = await listenTransport(uri, {
    // The first connection is the migration; a second one only carries
    // postcopy-preempt pages, and with multifd one more per channel: any
    // other is refused at once.
    spareConnections: (destination.preempt ? 1 : 0) +
      (multifd?.channels ?? 0),
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.onRefused ? { onRefused: options.onRefused } : {}),
    ...(options.tls ? { tls: options.tls } : {}),
  });
  return {
    address: listener.address,
    format: "stream",
    async incoming() {
      const accept = () => listener.accept();
      if (multifd === undefined) {
        return await destination.incoming(await accept(), { accept });
      }
      const { main, channels } = await acceptMultifdConnections(accept, {
        ...multifd,
        clock: options.clock ?? SYSTEM_CLOCK,
      });
      return await destination.incoming(main, {
        accept,
        multifdChannels: channels,
      });
    },
    close: () => listener.close(),
  };
}

/**
 * multifd needs a socket: QEMU 7.2's refusals for `exec:` and `file:`
 * (which 7.2 does not have at all).
 *
 * @throws {NotSupportedError} For a URI other than `tcp:` and `unix:`.
 */
function refuseMultifdUri(uri: string): void {
  const { scheme } = parseTransportUri(uri);
  if (scheme === "file") {
    throw new NotSupportedError(
      "Parameter 'uri' expects a valid migration protocol",
    );
  }
  if (scheme !== "tcp" && scheme !== "unix") {
    throw new NotSupportedError("multifd is not supported by current protocol");
  }
}

function mappedRamListener(
  destination: DestinationMigration,
  uri: string,
): IncomingMigrationListener {
  const target = parseTransportUri(uri);
  if (target.scheme !== "file") {
    throw new TypeError(
      `Cannot load mapped-ram from "${uri}": it needs a file: URI`,
    );
  }
  return {
    address: uri,
    format: "mapped-ram",
    async incoming() {
      const file = await openRandomAccessFile(target.path, { readOnly: true });
      try {
        return await destination.incomingMappedRam(file, {
          offset: target.offset,
        });
      } finally {
        await file.close();
      }
    },
    close: () => Promise.resolve(),
  };
}

/**
 * Whether `uri` names a mapped-ram file; `false` for other URIs, and for a
 * file that cannot be read or decoded (loading it as a stream then says
 * why).
 */
async function holdsMappedRam(uri: string): Promise<boolean> {
  const target = parseTransportUri(uri);
  if (target.scheme !== "file") return false;
  return await fileHoldsMappedRam(target).catch(() => false);
}

async function fileHoldsMappedRam(target: FileTransportUri): Promise<boolean> {
  const file = await openRandomAccessFile(target.path, { readOnly: true });
  try {
    return await isMappedRamFile(file, { offset: target.offset });
  } finally {
    await file.close();
  }
}
