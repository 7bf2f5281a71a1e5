/**
 * The outgoing side of a monitored guest: QEMU 7.2's `migrate`,
 * `migrate_cancel`, `migrate-continue`, `migrate-pause`,
 * `migrate-start-postcopy` and the source half of `query-migrate`, over
 * one {@linkcode SourceMigration} per migration. Private to lib/qmp/.
 *
 * The engine's statuses become QEMU's events: `MIGRATION` on every change
 * (with `events` on), `MIGRATION_PASS` on every dirty-bitmap sync, `STOP`
 * when the switchover stops the guest (before `pre-switchover`, after
 * `postcopy-active`), `RESUME` when a cancel or failure restarts it. The
 * engine names its stop-and-copy phase `device` even without
 * `pause-before-switchover`; QEMU 7.2 stays in `active` then, and so does
 * what the monitor reports.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import type { MigrationInfo } from "../migration/migration_info.ts";
import type { MigrationParameters } from "../migration/migration_parameters.ts";
import {
  isRunningStatus,
  type MigrationEventDetail,
  type MigrationStatus,
} from "../migration/migration_state.ts";
import {
  type MigrationPassDetail,
  SourceMigration,
} from "../migration/source_migration.ts";
import { connectTransport } from "../transport/open_transport.ts";
import type { TlsOptions } from "../transport/tls_transport.ts";
import type { Transport } from "../transport/transport.ts";
import type { TransportUri } from "../transport/transport_uri.ts";
import { deferTransport } from "./_deferred_transport.ts";
import type { MigrationSettings } from "./_migration_settings.ts";
import { checkQemuUri, connectFailure } from "./_qemu_uri.ts";
import type { QomObjects } from "./_qom_objects.ts";
import type { EmitEvent, VmRunState } from "./_vm_run_state.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";
import type { MonitorSourceOptions } from "./migration_monitor.ts";

/** Options for {@linkcode OutgoingMigration}. */
export interface OutgoingMigrationOptions {
  settings: MigrationSettings;
  runState: VmRunState;
  emit: EmitEvent;
  source: MonitorSourceOptions;
  /** The TLS objects `tls-creds` names. */
  objects: QomObjects;
}

/**
 * A migration before the engine has it: connecting (QEMU's `setup`), or
 * cancelled or failed before the connection was up.
 */
interface Early {
  status: "setup" | "cancelling" | "cancelled" | "failed";
  /** Why it failed, when QEMU says (`error-desc`). */
  errorDesc?: string;
  /** Aborts the connection attempt. */
  abort: AbortController;
}

/** The guest's outgoing migrations, one at a time. */
export class OutgoingMigration {
  readonly #options: OutgoingMigrationOptions;
  #source: SourceMigration | undefined;
  #early: Early | undefined;
  /** Whether `migrate` announced the current migration's setup itself. */
  #setupAnnounced = false;
  /** Settles when the migration `migrate` started ends. */
  #migration: Promise<void> = Promise.resolve();

  constructor(options: OutgoingMigrationOptions) {
    this.#options = options;
  }

  /** The current or last source migration. */
  get source(): SourceMigration | undefined {
    return this.#source;
  }

  /** The status as QEMU reports it (`none` before any migration). */
  get status(): MigrationStatus {
    if (this.#early !== undefined) return this.#early.status;
    const source = this.#source;
    if (source === undefined) return "none";
    return this.#qemuStatus(source.status);
  }

  /** Whether a migration is running (QEMU's `migration_is_running()`). */
  get running(): boolean {
    return isRunningStatus(this.status);
  }

  /**
   * `migrate`: checks as QEMU does, then starts the migration; the
   * connection is made in the background.
   *
   * @param args The command's arguments.
   * @throws {QmpError} With QEMU's refusal.
   */
  migrate(args: Readonly<Record<string, QmpValue>>): void {
    const uri = args.uri as string;
    if (args.resume === true) return this.#resume(uri);
    if (this.running) {
      throw new QmpError({ desc: "There's a migration process in progress" });
    }
    const { runState } = this.#options;
    if (runState.state === "inmigrate") {
      throw new QmpError({
        desc: "Guest is waiting for an incoming migration",
      });
    }
    if (runState.state === "postmigrate") {
      throw new QmpError({
        desc: "Can't migrate the vm that was paused due to previous migration",
      });
    }
    const guest = runState.guest;
    if (guest === undefined) {
      throw new QmpError({ desc: "Cannot migrate: the guest has no RAM yet" });
    }
    const check = checkQemuUri(uri, "outgoing");
    const early: Early = { status: "setup", abort: new AbortController() };
    this.#source = undefined;
    this.#early = early;
    this.#setupAnnounced = true;
    this.#migrationEvent("setup");
    if (!check.ok) {
      if (check.errorDesc) early.errorDesc = check.desc;
      this.#end(early, "failed");
      throw new QmpError({ desc: check.desc });
    }
    void this.#connectAndStart(check.uri, early, guest);
  }

  /**
   * Serves a migration the app started itself, from now on.
   *
   * @param source The migration.
   * @throws {TypeError} While another migration runs.
   */
  attach(source: SourceMigration): void {
    if (this.running) {
      throw new TypeError(
        `Cannot attach a migration: another one is in "${this.status}"`,
      );
    }
    this.#options.settings.adopt(source.capabilities, source.parameters);
    this.#early = undefined;
    this.#setupAnnounced = false;
    this.#listen(source);
    this.#source = source;
  }

  /**
   * Ends what runs, as a QEMU that goes away would: a connection being
   * made is given up, a precopy migration cancelled, a postcopy one
   * paused (its destination keeps the guest and waits for a recovery).
   */
  async close(): Promise<void> {
    const early = this.#early;
    if (early?.status === "setup") this.cancel();
    const source = this.#source;
    if (source === undefined || !isRunningStatus(source.status)) return;
    if (source.status === "postcopy-active") {
      source.pause();
    } else if (!source.status.startsWith("postcopy")) {
      source.cancel();
      await this.#migration;
    }
  }

  /** `migrate_cancel`: nothing to do unless a migration runs. */
  cancel(): void {
    const early = this.#early;
    if (early?.status === "setup") {
      this.#end(early, "cancelling");
      early.abort.abort();
      return;
    }
    const source = this.#source;
    if (source === undefined || !isRunningStatus(source.status)) return;
    try {
      source.cancel();
    } catch (error) {
      throw new QmpError({ desc: describeError(error), cause: error });
    }
  }

  /**
   * `migrate-continue`: succeeds whenever `state` is the current status,
   * and lets a migration in `pre-switchover` go on.
   *
   * @param state The status the client expects.
   * @throws {QmpError} If the status is another one.
   */
  continue(state: string): void {
    const status = this.status;
    if (state !== status) {
      throw new QmpError({
        desc: `Migration not in expected state: ${status}`,
      });
    }
    if (status === "pre-switchover") this.#source?.continue(status);
  }

  /**
   * `migrate-start-postcopy`.
   *
   * @throws {QmpError} Without postcopy-ram, or before any migration.
   */
  startPostcopy(): void {
    if (!this.#options.settings.capabilities["postcopy-ram"]) {
      throw new QmpError({
        desc:
          "Enable postcopy with migrate_set_capability before the start of migration",
      });
    }
    if (this.status === "none") {
      throw new QmpError({
        desc: "Postcopy must be started after migration has been started",
      });
    }
    if (this.#source !== undefined && isRunningStatus(this.#source.status)) {
      this.#source.startPostcopy();
    }
  }

  /**
   * Applies changed parameters to a running migration at once.
   *
   * @param changed The livemig parameters that changed.
   */
  parametersChanged(changed: Partial<MigrationParameters>): void {
    const source = this.#source;
    if (source === undefined || !isRunningStatus(source.status)) return;
    const { "xbzrle-cache-size": cache, ...rest } = changed;
    source.setParameters({
      ...rest,
      ...(cache === undefined
        ? {}
        : { "xbzrle-cache-size": cacheSize(cache, source.guest) }),
    });
  }

  /**
   * The source half of `query-migrate`, as QEMU 7.2 fills it.
   *
   * @returns The members, or `undefined` before any migration.
   */
  info(): Record<string, QmpValue> | undefined {
    const early = this.#early;
    if (early !== undefined) {
      return early.errorDesc === undefined
        ? { status: early.status }
        : { status: early.status, "error-desc": early.errorDesc };
    }
    const source = this.#source;
    if (source === undefined) return undefined;
    const status = this.status;
    switch (status) {
      case "none":
        return undefined;
      case "setup":
      case "cancelled":
        return { status };
      case "failed": {
        const desc = source.query()["error-desc"];
        return desc === undefined ? { status } : { status, "error-desc": desc };
      }
    }
    return runningInfo(status, source.query(), {
      xbzrle: this.#options.settings.capabilities.xbzrle,
    });
  }

  /** `migrate` with `resume: true`: a paused postcopy continues over a new connection. */
  #resume(uri: string): void {
    const source = this.#source;
    if (source === undefined || source.status !== "postcopy-paused") {
      throw new QmpError({
        desc: "Cannot resume if there is no paused migration",
      });
    }
    const check = checkQemuUri(uri, "outgoing");
    if (!check.ok) throw new QmpError({ desc: check.desc });
    // The preempt connection follows the main one, so the destination
    // takes the first it accepts as the main channel.
    let tls;
    try {
      tls = this.#tls();
    } catch (error) {
      throw new QmpError({ desc: describeError(error), cause: error });
    }
    const connect = () => connectTransport(check.uri, tls ? { tls } : {});
    const main = connect();
    const preempt = this.#options.settings.capabilities["postcopy-preempt"]
      ? deferTransport(
        main.then(connect),
        describeUri(check.uri),
      )
      : undefined;
    try {
      source.resume(deferTransport(main, describeUri(check.uri)), preempt);
    } catch (error) {
      throw new QmpError({ desc: describeError(error), cause: error });
    }
  }

  /**
   * Connects to the destination, then hands the migration to the engine;
   * a connection that fails or is cancelled ends it here.
   */
  async #connectAndStart(
    uri: TransportUri,
    early: Early,
    guest: MigratableGuest,
  ): Promise<void> {
    let transport: Transport;
    if (
      this.#options.settings.capabilities.multifd &&
      uri.scheme !== "tcp" && uri.scheme !== "unix"
    ) {
      // As QEMU 7.2: migrate succeeds, then the migration fails.
      early.errorDesc = "multifd is not supported by current protocol";
      this.#end(early, "failed");
      return;
    }
    let tls;
    try {
      tls = this.#tls();
    } catch (error) {
      // QEMU's own text, e.g. "No TLS credentials with id 'tls0'".
      early.errorDesc = describeError(error);
      this.#end(early, "failed");
      return;
    }
    try {
      transport = await connectTransport(uri, {
        signal: early.abort.signal,
        ...(tls ? { tls } : {}),
      });
    } catch (error) {
      if (early.status !== "cancelling") {
        early.errorDesc = connectFailure(uri, error);
      }
      this.#end(early, early.status === "cancelling" ? "cancelled" : "failed");
      return;
    }
    if (this.#early !== early || early.status !== "setup") {
      await transport.close();
      if (early.status === "cancelling") this.#end(early, "cancelled");
      return;
    }
    const source = this.#createSource(guest);
    this.#early = undefined;
    this.#source = source;
    this.#migration = source.migrate(transport, {
      connect: () => connectTransport(uri, tls ? { tls } : {}),
    }).then(() => {}, () => {}); // the status and error-desc tell
  }

  /** TLS as `tls-creds` and `tls-hostname` ask for it, as a client. */
  #tls(): TlsOptions | undefined {
    return this.#options.objects.tlsFor(
      "client",
      this.#options.settings.parameters,
    );
  }

  /** A source migration with the capabilities and parameters set now. */
  #createSource(guest: MigratableGuest): SourceMigration {
    const { settings } = this.#options;
    const parameters = settings.livemigParameters();
    const source = new SourceMigration(guest, {
      ...this.#options.source,
      capabilities: settings.livemigCapabilities(),
      parameters: {
        ...parameters,
        "xbzrle-cache-size": cacheSize(
          parameters["xbzrle-cache-size"],
          guest,
        ),
      },
    });
    this.#listen(source);
    return source;
  }

  /** Turns the migration's statuses and passes into QEMU's events. */
  #listen(source: SourceMigration): void {
    source.addEventListener("status", (event) => {
      if (this.#source !== source) return;
      this.#onStatus(
        (event as CustomEvent<MigrationEventDetail>).detail.status,
      );
    });
    source.addEventListener("pass", (event) => {
      if (this.#source !== source) return;
      const { pass } = (event as CustomEvent<MigrationPassDetail>).detail;
      this.#options.emit("MIGRATION_PASS", { pass });
    });
  }

  /** Moves a migration the engine does not have yet to `status`. */
  #end(early: Early, status: Early["status"]): void {
    early.status = status;
    this.#migrationEvent(status);
  }

  #onStatus(status: MigrationStatus): void {
    const { runState, settings } = this.#options;
    switch (status) {
      case "setup":
        if (this.#setupAnnounced) return; // migrate announced it already
        break;
      case "device":
        if (!settings.capabilities["pause-before-switchover"]) {
          runState.switchover();
          return;
        }
        break;
      case "pre-switchover":
        runState.switchover();
        break;
      case "postcopy-active":
        this.#migrationEvent(status);
        runState.switchover();
        return;
      case "completed":
        runState.outgoingEnded(true);
        break;
      case "cancelled":
      case "failed":
        runState.outgoingEnded(false);
        break;
    }
    this.#migrationEvent(status);
  }

  #migrationEvent(status: MigrationStatus): void {
    if (this.#options.settings.capabilities.events) {
      this.#options.emit("MIGRATION", { status });
    }
  }

  #qemuStatus(status: MigrationStatus): MigrationStatus {
    return status === "device" &&
        !this.#options.settings.capabilities["pause-before-switchover"]
      ? "active"
      : status;
  }
}

/** QEMU 7.2's `populate_time_info()` and `populate_ram_info()`. */
function runningInfo(
  status: MigrationStatus,
  info: MigrationInfo,
  options: { xbzrle: boolean },
): Record<string, QmpValue> {
  const result: Record<string, QmpValue> = {
    status,
    "setup-time": info["setup-time"] ?? 0,
    "total-time": info["total-time"] ?? 0,
  };
  if (status === "completed") result.downtime = info.downtime ?? 0;
  else result["expected-downtime"] = info["expected-downtime"] ?? 0;
  if (info.ram !== undefined) result.ram = { ...info.ram };
  if (options.xbzrle && info["xbzrle-cache"] !== undefined) {
    result["xbzrle-cache"] = { ...info["xbzrle-cache"] };
  }
  // While auto-converge throttles the guest (dirty-limit's are 8.1's).
  for (
    const name of [
      "cpu-throttle-percentage",
      "dirty-limit-throttle-time-per-round",
      "dirty-limit-ring-full-time",
    ] as const
  ) {
    if (info[name] !== undefined) result[name] = info[name];
  }
  return result;
}

/**
 * An XBZRLE cache size the engine can use: a cache larger than the
 * guest's RAM would hold nothing more, so it is held to that.
 */
function cacheSize(bytes: number, guest: MigratableGuest): number {
  const ram = Math.max(guest.memory.totalBytes, guest.memory.pageSize);
  return Math.min(bytes, 2 ** Math.ceil(Math.log2(ram)));
}

function describeUri(uri: TransportUri): string {
  switch (uri.scheme) {
    case "tcp":
      return `tcp:${uri.host}:${uri.port}`;
    case "unix":
      return `unix:${uri.path}`;
    case "exec":
      return `exec:${uri.command}`;
    case "file":
      return `file:${uri.path}`;
  }
}
