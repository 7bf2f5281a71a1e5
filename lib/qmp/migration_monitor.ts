/**
 * A QEMU 7.2 compatible monitor for a livemig guest: what
 * `qemu-system-x86_64 -qmp … [-incoming …] [-S]` offers a management
 * program, over livemig's {@linkcode SourceMigration} and
 * {@linkcode DestinationMigration}.
 *
 * ```
 * MigrationMonitor
 *   run state      query-status, stop, cont, quit         STOP, RESUME, SHUTDOWN
 *   settings       migrate-set-capabilities, migrate-set-parameters and queries
 *   outgoing       migrate [resume], migrate_cancel, migrate-continue,
 *                  migrate-start-postcopy, migrate-pause   MIGRATION, MIGRATION_PASS
 *   incoming       migrate-incoming, migrate-recover, migrate-pause
 *   both           query-migrate, human-monitor-command (info migrate, …),
 *                  calc-dirty-rate, query-dirty-rate
 *   server         a QmpServer: clients one at a time, as QEMU's socket monitor
 * ```
 *
 * Each `migrate` runs a fresh {@linkcode SourceMigration} with the
 * capabilities and parameters set then; `migrate-set-parameters` during a
 * migration changes its rate limit, switchover threshold and XBZRLE cache
 * at once. An incoming guest gets a {@linkcode DestinationMigration} when
 * its source connects; once loaded, it can migrate on.
 *
 * @module
 */

import type { MigratableGuest } from "../guest/migratable_guest.ts";
import type {
  DestinationMigration,
  DestinationMigrationOptions,
} from "../migration/destination_migration.ts";
import type {
  SourceMigration,
  SourceMigrationOptions,
} from "../migration/source_migration.ts";
import type { Transport, TransportListener } from "../transport/transport.ts";
import { DirtyRateSampler } from "./_dirty_rate_sampler.ts";
import { IncomingMigration } from "./_incoming_migration.ts";
import { MigrationSettings } from "./_migration_settings.ts";
import { monitorCommands } from "./_monitor_commands.ts";
import { OutgoingMigration } from "./_outgoing_migration.ts";
import { QomObjects } from "./_qom_objects.ts";
import { VmRunState } from "./_vm_run_state.ts";
import type { QmpValue } from "./qmp_json.ts";
import {
  type QmpServeOptions,
  QmpServer,
  type QmpVersion,
} from "./qmp_server.ts";

/**
 * QEMU's run states a monitored guest can be in, as `query-status`
 * reports them: `prelaunch` (`-S`), `running`, `paused`, `inmigrate`
 * (waiting for an incoming migration), `finish-migrate` (stopped for a
 * switchover), `postmigrate` (migrated away), `shutdown`.
 */
export type QemuRunState =
  | "prelaunch"
  | "running"
  | "paused"
  | "inmigrate"
  | "postmigrate"
  | "finish-migrate"
  | "shutdown";

/** How a monitor's outgoing migrations are made; capabilities and parameters come from the monitor. */
export type MonitorSourceOptions = Omit<
  SourceMigrationOptions,
  "capabilities" | "parameters"
>;

/** How a monitor's incoming migrations are made; the monitor decides the rest. */
export type MonitorDestinationOptions = Omit<
  DestinationMigrationOptions,
  "events" | "postcopy" | "preempt" | "autostart" | "beforeResume"
>;

/** Options for {@linkcode MigrationMonitor}. */
export interface MigrationMonitorOptions {
  /**
   * The guest, running (or paused with `paused`). Leave it out with
   * `incoming`: the guest then arrives by migration.
   */
  guest?: MigratableGuest;
  /**
   * The guest arrives by migration, as with QEMU's `-incoming defer`: run
   * state `inmigrate` until `migrate-incoming` (or
   * {@linkcode MigrationMonitor.migrateIncoming}) has loaded it.
   *
   * @default {false}
   */
  incoming?: boolean;
  /**
   * Keep the guest stopped until `cont`, as QEMU's `-S` (run state
   * `prelaunch`; an incoming guest stays `paused` once loaded).
   *
   * @default {false}
   */
  paused?: boolean;
  /**
   * How outgoing migrations are made (clock, machine name, …);
   * capabilities and parameters come from the monitor.
   *
   * @default {{}}
   */
  source?: MonitorSourceOptions;
  /**
   * How incoming migrations are made (guest factory, RAM limit, clock, …);
   * `events`, `postcopy`, `preempt` and `autostart` come from the monitor.
   *
   * @default {{}}
   */
  destination?: MonitorDestinationOptions;
  /**
   * The version in the greeting and `query-version`.
   *
   * @default {{ qemu: { major: 7, minor: 2, micro: 0 }, package: "livemig" }}
   */
  version?: QmpVersion;
  /**
   * The wall clock of event timestamps, in ms since the Unix epoch.
   *
   * @default {() => performance.timeOrigin + performance.now()}
   */
  now?: () => number;
}

/** Why a monitored guest ended: {@linkcode MigrationMonitor.ended}. */
export interface MonitorEnd {
  /** `quit` over QMP, {@linkcode MigrationMonitor.shutdown}, or a failed incoming migration. */
  reason: "quit" | "shutdown" | "incoming-failed";
  /** What failed, for `incoming-failed`. */
  error?: unknown;
}

/**
 * A QEMU-compatible QMP monitor around a guest: a program written for
 * QEMU's QMP can migrate it, steer and observe the migration, without
 * knowing it talks to livemig.
 *
 * @example Usage
 * ```ts
 * import {
 *   createMemoryTransportPair, MigrationMonitor, QmpClient, SimulatedGuest,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const monitor = new MigrationMonitor({
 *   guest: new SimulatedGuest({ ramBytes: 1 << 20 }),
 * });
 * const [near, far] = createMemoryTransportPair();
 * const served = monitor.handle(far);
 * const qmp = await QmpClient.connect(near);
 * assert.deepEqual(await qmp.execute("query-status"), { status: "running", singlestep: false, running: true });
 * await qmp.execute("stop");
 * assert.equal((await qmp.waitForEvent("STOP")).event, "STOP");
 * await qmp.execute("migrate-set-parameters", { "max-bandwidth": 1 << 20 });
 * assert.equal(monitor.parameters["max-bandwidth"], 1 << 20);
 * await qmp.close();
 * await served;
 * await monitor.close();
 * ```
 */
export class MigrationMonitor {
  readonly #server: QmpServer;
  readonly #runState: VmRunState;
  readonly #settings = new MigrationSettings();
  readonly #objects = new QomObjects();
  readonly #outgoing: OutgoingMigration;
  readonly #incoming: IncomingMigration;
  readonly #dirtyRate: DirtyRateSampler;
  readonly #ended = Promise.withResolvers<MonitorEnd>();

  /**
   * Constructs a new instance.
   *
   * @param options The guest (or `incoming`), `-S`, how migrations are made.
   * @throws {TypeError} Without a guest and without `incoming`.
   */
  constructor(options: MigrationMonitorOptions) {
    const incoming = options.incoming ?? false;
    if (options.guest === undefined && !incoming) {
      throw new TypeError(
        "Cannot construct MigrationMonitor: it needs a guest, or incoming to receive one",
      );
    }
    const paused = options.paused ?? false;
    if (options.guest !== undefined && !incoming) {
      if (paused) void options.guest.pause();
      else if (!options.guest.running) options.guest.resume();
    }
    const emit = (event: string, data?: Readonly<Record<string, QmpValue>>) =>
      this.#server.emit(event, data);
    this.#runState = new VmRunState({
      guest: incoming ? undefined : options.guest,
      incoming,
      paused,
      emit,
    });
    this.#outgoing = new OutgoingMigration({
      settings: this.#settings,
      runState: this.#runState,
      emit,
      source: options.source ?? {},
      objects: this.#objects,
    });
    this.#incoming = new IncomingMigration({
      settings: this.#settings,
      runState: this.#runState,
      emit,
      destination: options.destination ?? {},
      objects: this.#objects,
      onFailed: (error) =>
        this.#ended.resolve({ reason: "incoming-failed", error }),
    });
    this.#dirtyRate = new DirtyRateSampler(
      () => this.#runState.guest,
      options.source?.clock,
    );
    this.#server = new QmpServer({
      clients: "one-at-a-time",
      ...(options.version ? { version: options.version } : {}),
      ...(options.now ? { now: options.now } : {}),
      commands: monitorCommands({
        runState: this.#runState,
        settings: this.#settings,
        outgoing: this.#outgoing,
        incoming: this.#incoming,
        dirtyRate: this.#dirtyRate,
        objects: this.#objects,
        quit: () => this.#end("host-qmp-quit", "quit"),
      }),
    });
  }

  /** The QMP server: serve it on more listeners, or emit events of your own. */
  get server(): QmpServer {
    return this.#server;
  }

  /** The run state `query-status` reports, e.g. `running`, `inmigrate`. */
  get runState(): QemuRunState {
    return this.#runState.state;
  }

  /** The guest (for an incoming guest: once loaded). */
  get guest(): MigratableGuest | undefined {
    return this.#runState.guest;
  }

  /** The current or last outgoing migration. */
  get source(): SourceMigration | undefined {
    return this.#outgoing.source;
  }

  /** The incoming migration, once its source connected. */
  get destination(): DestinationMigration | undefined {
    return this.#incoming.destination;
  }

  /** The capabilities as `query-migrate-capabilities` reports them. */
  get capabilities(): Readonly<Record<string, boolean>> {
    return this.#settings.capabilities;
  }

  /** The parameters as `query-migrate-parameters` reports them. */
  get parameters(): Readonly<Record<string, QmpValue>> {
    return this.#settings.parameters;
  }

  /** Resolves when the guest has ended: `quit`, a shutdown, a failed incoming migration. */
  get ended(): Promise<MonitorEnd> {
    return this.#ended.promise;
  }

  /**
   * `query-migrate`, as a client would get it.
   *
   * @returns The reply.
   */
  queryMigrate(): Record<string, QmpValue> {
    return {
      ...this.#incoming.info(),
      ...this.#outgoing.info(),
    };
  }

  /**
   * Serves a migration the app started (or is about to start) itself, as
   * if `migrate` had started it: `query-migrate`, `migrate-continue`,
   * `migrate_cancel`, `migrate-set-parameters` and the events act on it,
   * and the monitor's capabilities and parameters become its own.
   *
   * @example Usage
   * ```ts
   * import {
   *   createMemoryTransportPair, DestinationMigration, MigrationMonitor,
   *   QmpClient, SimulatedGuest, SourceMigration,
   * } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const guest = new SimulatedGuest({ ramBytes: 1 << 20 });
   * const source = new SourceMigration(guest, {
   *   capabilities: { events: true, "pause-before-switchover": true },
   * });
   * const monitor = new MigrationMonitor({ guest });
   * monitor.attachSource(source);
   * const [near, far] = createMemoryTransportPair();
   * const served = monitor.handle(far);
   * const qmp = await QmpClient.connect(near);
   *
   * const [a, b] = createMemoryTransportPair();
   * const migrated = source.migrate(a);
   * const loaded = new DestinationMigration().incoming(b);
   * await qmp.waitForEvent("MIGRATION", (e) => e.data.status === "pre-switchover");
   * await qmp.execute("migrate-continue", { state: "pre-switchover" });
   * assert.equal((await migrated).status, "completed");
   * (await loaded).guest.pause();
   * await qmp.close();
   * await served;
   * await monitor.close();
   * ```
   *
   * @param source The migration, of this monitor's guest.
   * @throws {TypeError} While another migration of the monitor runs.
   */
  attachSource(source: SourceMigration): void {
    this.#outgoing.attach(source);
  }

  /**
   * Waits for a migration at `uri` (QEMU's `-incoming URI`, or
   * `migrate-incoming`); needs `incoming`.
   *
   * @param uri Where to listen, e.g. `tcp:127.0.0.1:4444`.
   * @returns The address it listens at (with the port the system picked for port 0).
   * @throws {QmpError} With QEMU's refusal (not incoming, started already, a bad URI).
   */
  async migrateIncoming(uri: string): Promise<string> {
    await this.#incoming.listen(uri);
    const info = this.#incoming.info();
    return addressOf(info?.["socket-address"]) ?? uri;
  }

  /**
   * Serves QMP clients that connect to `listener`, one at a time, until
   * it closes or the signal aborts.
   *
   * @param listener Where clients connect, e.g. `listenTransport("unix:/run/vm.qmp")`.
   * @param options A signal that stops serving.
   * @returns Resolves when no more clients are accepted.
   */
  serve(
    listener: TransportListener,
    options: QmpServeOptions = {},
  ): Promise<void> {
    return this.#server.serve(listener, options);
  }

  /**
   * Serves one QMP client on `transport`.
   *
   * @param transport The client's connection.
   * @returns Resolves once the client has gone.
   */
  handle(transport: Transport): Promise<void> {
    return this.#server.handle(transport);
  }

  /**
   * Shuts the guest down as QEMU does on a signal: `SHUTDOWN` with
   * `reason` is sent, the guest stops, {@linkcode MigrationMonitor.ended}
   * resolves.
   *
   * @param reason QEMU's reason.
   * @default {"host-signal"}
   */
  shutdown(reason = "host-signal"): void {
    this.#end(reason, "shutdown");
  }

  /**
   * Ends the monitor as a QEMU process that goes away: disconnects every
   * client, stops listening, cancels a precopy migration (a postcopy one
   * pauses: the destination keeps the guest), drops an incoming
   * connection, stops a dirty-rate measurement.
   */
  async close(): Promise<void> {
    this.#dirtyRate.stop();
    await Promise.all([
      this.#server.close(),
      this.#incoming.close(),
      this.#outgoing.close(),
    ]);
  }

  #end(reason: string, why: MonitorEnd["reason"]): void {
    this.#runState.shutdown(reason);
    this.#ended.resolve({ reason: why });
  }
}

function addressOf(value: QmpValue | undefined): string | undefined {
  if (!Array.isArray(value)) return undefined;
  const first = value[0] as Record<string, string> | undefined;
  if (first?.type === "inet") return `tcp:${first.host}:${first.port}`;
  if (first?.type === "unix") return `unix:${first.path}`;
  return undefined;
}
