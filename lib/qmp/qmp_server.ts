/**
 * A QMP monitor that answers like QEMU 7.2, serving any table of commands
 * on any listener.
 *
 * What a client sees (each line ends with `\r\n`, as QEMU writes it):
 *
 * ```
 * <- {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "livemig"}, "capabilities": ["oob"]}}
 * -> {"execute": "query-status"}
 * <- {"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
 * -> {"execute": "qmp_capabilities", "id": 1}
 * <- {"return": {}, "id": 1}
 * -> {"execute": "nope"}
 * <- {"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}
 * <- {"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}
 * ```
 *
 * Requests are read as QEMU reads them (by brackets, not lines; single
 * quotes allowed) and answered in order; a malformed one gets QEMU's parse
 * error and does not end the connection. After `qmp_capabilities` with
 * `{"enable": ["oob"]}`, commands marked `allowOob` may be sent with
 * `exec-oob` and run at once, ahead of commands still waiting. Events go to
 * every client that finished negotiation. A client that disconnects, sends
 * garbage or stops reading (16 MiB unread) affects no one else.
 *
 * Besides the table, the server answers `qmp_capabilities` itself, and
 * `query-version` and `query-commands` unless the table has them.
 *
 * @module
 */

import type { Transport, TransportListener } from "../transport/transport.ts";
import { QmpSession } from "./_qmp_session.ts";
import type { QmpCommand, QmpCommandTable } from "./qmp_command.ts";
import { formatQmpJson, type QmpValue } from "./qmp_json.ts";

/** What `query-version` and the greeting report. */
export interface QmpVersion {
  /** The version numbers. */
  qemu: { major: number; minor: number; micro: number };
  /** The package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  package: string;
}

/** Options for {@linkcode QmpServer}. */
export interface QmpServerOptions {
  /** The commands, by name. */
  commands: QmpCommandTable;
  /**
   * The version in the greeting and in `query-version`. Clients written for
   * QEMU check it, so livemig reports the QEMU it behaves like.
   *
   * @default {{ qemu: { major: 7, minor: 2, micro: 0 }, package: "livemig" }}
   */
  version?: QmpVersion;
  /**
   * The wall clock for event timestamps, in milliseconds since the Unix
   * epoch (fractions give the microseconds).
   *
   * @default {() => performance.timeOrigin + performance.now()}
   */
  now?: () => number;
  /**
   * `"concurrent"` serves every client at once; `"one-at-a-time"` does what
   * QEMU's socket chardev does: a second client is connected but gets its
   * greeting only when the first one has gone.
   *
   * @default {"concurrent"}
   */
  clients?: "concurrent" | "one-at-a-time";
}

/** Options for {@linkcode QmpServer.serve}. */
export interface QmpServeOptions {
  /** Stops accepting (and closes the listener) when aborted. */
  signal?: AbortSignal;
}

/** The version livemig reports unless told otherwise. */
const DEFAULT_VERSION: QmpVersion = {
  qemu: { major: 7, minor: 2, micro: 0 },
  package: "livemig",
};

/**
 * A QMP monitor: QEMU 7.2's protocol around a table of commands.
 *
 * @example Usage
 * ```ts
 * import { createMemoryTransportPair, QmpClient, QmpServer } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * let running = true;
 * const server = new QmpServer({
 *   commands: {
 *     "query-status": { run: () => ({ running, singlestep: false, status: running ? "running" : "paused" }) },
 *     "stop": { run: () => { running = false; server.emit("STOP"); } },
 *   },
 * });
 * const [near, far] = createMemoryTransportPair();
 * const served = server.handle(far);
 * const client = await QmpClient.connect(near);
 * const events = client.events();
 * await client.execute("stop");
 * assert.equal((await events.next()).value?.event, "STOP");
 * assert.deepEqual(await client.execute("query-status"), { status: "paused", singlestep: false, running: false });
 * await client.close();
 * await served;
 * ```
 */
export class QmpServer {
  readonly #commands: QmpCommandTable;
  readonly #version: QmpVersion;
  readonly #now: () => number;
  readonly #exclusive: boolean;
  readonly #sessions = new Set<QmpSession>();
  readonly #listeners = new Set<TransportListener>();
  readonly #waiting = new Set<Transport>();
  #turn: Promise<void> = Promise.resolve();
  #closed = false;

  /**
   * Constructs a new instance.
   *
   * @param options The commands, the version, the clock and how clients share the monitor.
   */
  constructor(options: QmpServerOptions) {
    this.#commands = options.commands;
    this.#version = options.version ?? DEFAULT_VERSION;
    this.#now = options.now ??
      (() => performance.timeOrigin + performance.now());
    this.#exclusive = options.clients === "one-at-a-time";
  }

  /** How many clients are connected and greeted. */
  get clientCount(): number {
    return this.#sessions.size;
  }

  /**
   * Accepts clients on `listener` until it closes, `close()` is called or
   * the signal aborts; each client is served by
   * {@linkcode QmpServer.handle}.
   *
   * @param listener Where clients connect, e.g. from `listenTransport("unix:/run/vm.qmp")`.
   * @param options A signal that stops serving.
   * @returns Resolves when no more clients are accepted (clients already connected are still served).
   */
  async serve(
    listener: TransportListener,
    options: QmpServeOptions = {},
  ): Promise<void> {
    const { signal } = options;
    if (this.#closed || signal?.aborted) return;
    this.#listeners.add(listener);
    const stop = () => void listener.close().catch(() => {});
    signal?.addEventListener("abort", stop, { once: true });
    try {
      while (!this.#closed) {
        let transport: Transport;
        try {
          transport = await listener.accept();
        } catch {
          return; // the listener closed
        }
        void this.handle(transport);
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      this.#listeners.delete(listener);
    }
  }

  /**
   * Serves one client on `transport` until it disconnects (or the server
   * closes): greeting, negotiation, commands, events. With
   * `clients: "one-at-a-time"` the client first waits for the ones before
   * it to leave.
   *
   * @param transport The client's connection; closed when done.
   * @returns Resolves once the client has gone.
   */
  handle(transport: Transport): Promise<void> {
    if (this.#closed) return transport.close();
    const run = async () => {
      if (this.#closed) return await transport.close();
      const session = new QmpSession(transport, {
        greeting: formatQmpJson({
          QMP: { version: this.#versionValue(), capabilities: ["oob"] },
        }),
        command: (name) => this.#command(name),
      });
      this.#sessions.add(session);
      try {
        await session.run();
      } finally {
        this.#sessions.delete(session);
      }
    };
    if (!this.#exclusive) return run();
    this.#waiting.add(transport);
    const turn = this.#turn.then(() => {
      this.#waiting.delete(transport);
      return run();
    });
    this.#turn = turn.catch(() => {});
    return turn;
  }

  /**
   * Sends an event to every client that finished negotiation, with QEMU's
   * timestamp: `{"timestamp": {"seconds": …, "microseconds": …}, "event": …, "data": …}`.
   *
   * @example Usage
   * ```ts
   * import { createMemoryTransportPair, QmpClient, QmpServer } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const server = new QmpServer({ commands: {}, now: () => 1_700_000_000_250.5 });
   * const [near, far] = createMemoryTransportPair();
   * const served = server.handle(far);
   * const client = await QmpClient.connect(near);
   * server.emit("MIGRATION", { status: "setup" });
   * assert.deepEqual(await client.waitForEvent("MIGRATION"), {
   *   event: "MIGRATION",
   *   data: { status: "setup" },
   *   timestamp: { seconds: 1_700_000_000, microseconds: 250_500 },
   * });
   * await client.close();
   * await served;
   * ```
   *
   * @param event The event name, e.g. `MIGRATION`.
   * @param data The event's data; left out of the line when absent, as QEMU does for `STOP`.
   */
  emit(event: string, data?: Readonly<Record<string, QmpValue>>): void {
    const micros = Math.floor(this.#now() * 1000);
    const line = formatQmpJson({
      timestamp: {
        seconds: Math.floor(micros / 1_000_000),
        microseconds: micros % 1_000_000,
      },
      event,
      data,
    });
    for (const session of this.#sessions) {
      if (session.negotiated) session.writeLine(line);
    }
  }

  /**
   * Stops accepting clients and disconnects every client.
   *
   * @returns Resolves once every listener and client connection is closed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all([
      ...[...this.#listeners].map((listener) =>
        listener.close().catch(() => {})
      ),
      ...[...this.#sessions].map((session) => session.close()),
      ...[...this.#waiting].map((transport) =>
        transport.close().catch(() => {})
      ),
    ]);
  }

  #versionValue(): QmpValue {
    const { major, minor, micro } = this.#version.qemu;
    return { qemu: { major, minor, micro }, package: this.#version.package };
  }

  #command(name: string): QmpCommand | undefined {
    const own = Object.hasOwn(this.#commands, name)
      ? this.#commands[name]
      : undefined;
    if (own !== undefined) return own;
    if (name === "query-version") return { run: () => this.#versionValue() };
    if (name === "query-commands") {
      return {
        run: () =>
          [
            ...new Set([
              "qmp_capabilities",
              "query-version",
              "query-commands",
              ...Object.keys(this.#commands),
            ]),
          ].map((command) => ({ name: command })),
      };
    }
    return undefined;
  }
}
