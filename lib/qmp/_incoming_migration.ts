/**
 * The incoming side of a monitored guest (QEMU's `-incoming`):
 * `migrate-incoming`, `migrate-recover`, `migrate-pause` in postcopy and
 * the destination half of `query-migrate`, over a
 * {@linkcode DestinationMigration} made when the source connects (so
 * capabilities set until then apply). Private to lib/qmp/.
 *
 * As in QEMU 7.2, `migrate-incoming` (and `migrate-recover`) send
 * `MIGRATION` `setup` themselves without a status change; `query-migrate`
 * shows no status until the source connects (`active`), and the listening
 * address as `socket-address` until the migration ends. A failed incoming
 * migration ends a QEMU process; here it is reported through `onFailed`.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { DestinationMigration } from "../migration/destination_migration.ts";
import { acceptMultifdConnections } from "../migration/_multifd_receive.ts";
import { SYSTEM_CLOCK } from "../streams/clock.ts";
import type {
  MigrationEventDetail,
  MigrationStatus,
} from "../migration/migration_state.ts";
import { listenTransport } from "../transport/open_transport.ts";
import type { QomObjects } from "./_qom_objects.ts";
import type { TransportListener } from "../transport/transport.ts";
import { parseTransportUri } from "../transport/transport_uri.ts";
import type { MigrationSettings } from "./_migration_settings.ts";
import { checkQemuUri } from "./_qemu_uri.ts";
import type { EmitEvent, VmRunState } from "./_vm_run_state.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";
import type { MonitorDestinationOptions } from "./migration_monitor.ts";

/** Options for {@linkcode IncomingMigration}. */
export interface IncomingMigrationOptions {
  /** The TLS objects `tls-creds` and `tls-authz` name. */
  objects: QomObjects;
  settings: MigrationSettings;
  runState: VmRunState;
  emit: EmitEvent;
  destination: MonitorDestinationOptions;
  /** Called once if the incoming migration fails. */
  onFailed(error: unknown): void;
}

/** The guest's incoming migration. */
export class IncomingMigration {
  readonly #options: IncomingMigrationOptions;
  #started = false;
  #listener: TransportListener | undefined;
  #socketAddress: QmpValue | undefined;
  #destination: DestinationMigration | undefined;
  #recovering = false;
  /** Whether the engine starts the guest itself (postcopy's RUN). */
  #engineStarts = false;

  constructor(options: IncomingMigrationOptions) {
    this.#options = options;
  }

  /** The destination migration, once the source connected. */
  get destination(): DestinationMigration | undefined {
    return this.#destination;
  }

  /** The destination's status (`none` until the source connects). */
  get status(): MigrationStatus {
    const status = this.#destination?.status ?? "none";
    return status === "setup" ? "none" : status;
  }

  /**
   * `migrate-incoming` (or `-incoming URI` at start): listens at `uri`
   * and loads the migration that arrives there.
   *
   * @param uri Where to listen.
   * @throws {QmpError} With QEMU's refusal.
   */
  async listen(uri: string): Promise<void> {
    if (this.#started) {
      throw new QmpError({
        desc: "The incoming migration has already been started",
      });
    }
    if (this.#options.runState.state !== "inmigrate") {
      throw new QmpError({
        desc: "'-incoming' was not specified on the command line",
      });
    }
    const listener = await this.#open(uri);
    this.#started = true;
    this.#listener = listener;
    this.#socketAddress = socketAddress(listener.address);
    void this.#receive(listener);
  }

  /**
   * `migrate-recover`: listens at `uri` for the source to resume a
   * paused postcopy.
   *
   * @param uri Where to listen.
   * @throws {QmpError} Outside postcopy-paused, or when already recovering.
   */
  async recover(uri: string): Promise<void> {
    const destination = this.#destination;
    if (destination === undefined || this.status !== "postcopy-paused") {
      throw new QmpError({
        desc: "Migrate recover can only be run when postcopy is paused.",
      });
    }
    if (this.#recovering) {
      throw new QmpError({ desc: "Migrate recovery is triggered already" });
    }
    const listener = await this.#open(uri);
    this.#recovering = true;
    this.#socketAddress = socketAddress(listener.address);
    void (async () => {
      try {
        const transport = await listener.accept();
        destination.recover(transport, { accept: () => listener.accept() });
        // The listener stays for the preempt connection until the
        // migration ends or pauses again.
        await new Promise<void>((resolve) => {
          const done = (event: Event) => {
            const { status } = (event as CustomEvent<MigrationEventDetail>)
              .detail;
            if (!["completed", "failed", "postcopy-paused"].includes(status)) {
              return;
            }
            destination.removeEventListener("status", done);
            resolve();
          };
          destination.addEventListener("status", done);
        });
      } catch {
        // the listener closed: the migration stays paused
      } finally {
        this.#recovering = false;
        await listener.close().catch(() => {});
      }
    })();
  }

  /** `migrate-pause` on the destination: whether it applied. */
  pause(): boolean {
    if (this.#destination?.status !== "postcopy-active") return false;
    this.#destination.pause();
    return true;
  }

  /** The destination half of `query-migrate`, as QEMU 7.2 fills it. */
  info(): Record<string, QmpValue> | undefined {
    const status = this.status;
    const info: Record<string, QmpValue> = {};
    if (this.#socketAddress !== undefined) {
      info["socket-address"] = this.#socketAddress;
    }
    if (status !== "none") info.status = status;
    if (status === "completed") {
      const query = this.#destination!.query();
      if (this.#options.settings.capabilities["postcopy-blocktime"]) {
        if (query["postcopy-blocktime"] !== undefined) {
          info["postcopy-blocktime"] = query["postcopy-blocktime"];
        }
        if (query["postcopy-vcpu-blocktime"] !== undefined) {
          info["postcopy-vcpu-blocktime"] = query["postcopy-vcpu-blocktime"];
        }
      }
    }
    return Object.keys(info).length === 0 ? undefined : info;
  }

  /** Stops listening and drops the connection of a migration under way. */
  async close(): Promise<void> {
    await this.#listener?.close().catch(() => {});
    const status = this.#destination?.status;
    if (status !== undefined && !["completed", "failed"].includes(status)) {
      this.#destination!.abort("the destination's monitor closed");
    }
  }

  /** QEMU's `qemu_start_incoming_migration()`: the setup event, then the URI. */
  async #open(uri: string): Promise<TransportListener> {
    this.#migrationEvent("setup");
    const check = checkQemuUri(uri, "incoming");
    if (!check.ok) throw new QmpError({ desc: check.desc });
    try {
      const { objects, settings } = this.#options;
      const tls = objects.tlsFor("server", settings.parameters);
      return await listenTransport(check.uri, tls ? { tls } : {});
    } catch (error) {
      throw new QmpError({ desc: describeError(error), cause: error });
    }
  }

  async #receive(listener: TransportListener): Promise<void> {
    const { settings, runState } = this.#options;
    let transport;
    try {
      transport = await listener.accept();
    } catch {
      return; // closed before a source came
    }
    const capabilities = settings.capabilities;
    this.#engineStarts = capabilities["postcopy-ram"] && runState.autostart;
    const parameters = settings.livemigParameters();
    const destination = new DestinationMigration({
      ...this.#options.destination,
      postcopy: capabilities["postcopy-ram"],
      preempt: capabilities["postcopy-preempt"],
      autostart: this.#engineStarts,
      ...(capabilities.multifd
        ? {
          multifd: {
            channels: parameters["multifd-channels"],
            compression: parameters["multifd-compression"],
          },
        }
        : {}),
    });
    this.#destination = destination;
    destination.addEventListener("status", (event) => {
      this.#onStatus(
        (event as CustomEvent<MigrationEventDetail>).detail.status,
      );
    });
    try {
      const accept = () => listener.accept();
      const multifd = destination.multifd;
      const { main, channels } = multifd === undefined
        ? { main: transport, channels: [] }
        : await acceptMultifdConnections(
          (first) => first ? Promise.resolve(transport) : accept(),
          { ...multifd, clock: SYSTEM_CLOCK },
        );
      await destination.incoming(main, { accept, multifdChannels: channels });
    } catch (error) {
      this.#options.onFailed(error);
    } finally {
      this.#socketAddress = undefined;
      await listener.close().catch(() => {});
    }
  }

  #onStatus(status: MigrationStatus): void {
    const { runState } = this.#options;
    const guest = this.#destination?.guest;
    switch (status) {
      case "setup":
        return; // sent by migrate-incoming already
      case "postcopy-active":
        this.#migrationEvent(status);
        if (guest !== undefined) runState.incomingStarted(guest, false);
        return;
      case "completed":
        if (guest !== undefined) {
          runState.incomingStarted(guest, !this.#engineStarts);
        }
        break;
      case "postcopy-paused":
        this.#recovering = false;
        break;
    }
    this.#migrationEvent(status);
  }

  #migrationEvent(status: MigrationStatus): void {
    if (this.#options.settings.capabilities.events) {
      this.#options.emit("MIGRATION", { status });
    }
  }
}

/** QEMU's `SocketAddress` for a listening address. */
function socketAddress(address: string): QmpValue | undefined {
  const uri = parseTransportUri(address);
  switch (uri.scheme) {
    case "tcp": {
      const ipv6 = uri.host.includes(":");
      return [{
        port: String(uri.port),
        ...(ipv6 ? { ipv6: true } : { ipv4: true }),
        host: uri.host,
        type: "inet",
      }];
    }
    case "unix":
      return [{ path: uri.path, type: "unix" }];
    default:
      return undefined;
  }
}
