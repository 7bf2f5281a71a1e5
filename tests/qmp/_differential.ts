/**
 * The differential harness: one script of QMP exchanges runs against
 * QEMU 7.2 processes and against `cli.ts run` processes, through the same
 * client code, and what each answered is written down in a form that can
 * be compared (values that differ from run to run, such as times, ports
 * and byte counts, are reduced to their shape).
 *
 * @module
 */

import type { QmpClient, QmpEvent } from "../../lib/qmp/qmp_client.ts";
import { QmpError } from "../../lib/qmp/qmp_error.ts";
import type { QmpValue } from "../../lib/qmp/qmp_json.ts";
import { buildFirmware, startQemu } from "../_helpers/qemu.ts";
import { startRun } from "./_run_process.ts";
import { delay } from "../_helpers/delay.ts";

/** Which implementation a script runs against. */
export type Implementation = "qemu" | "livemig";

/** One guest process of a script. */
export interface Vm {
  /** The connected client. */
  readonly qmp: QmpClient;
  /** Every event received so far. */
  readonly events: QmpEvent[];
  /** Resolves with the exit code once the process has ended. */
  readonly exited: Promise<number>;
  /** Ends the process. */
  stop(): Promise<void>;
}

/** How a guest is started. */
export interface VmSpec {
  /** Wait for `migrate-incoming` (`-incoming defer`). */
  incoming?: boolean;
  /** Guest RAM in MiB. */
  ramMiB?: number;
  /** livemig only: RAM full of non-zero data (`--prefill`). */
  prefill?: boolean;
}

let firmware: Promise<string> | undefined;

/**
 * Starts a guest: QEMU 7.2 with livemig's idle firmware, or `cli.ts run`
 * with an idle simulated guest of the same size.
 *
 * @param implementation Which one.
 * @param spec Incoming or not, RAM.
 * @returns The guest with a negotiated client recording events.
 */
export async function startVm(
  implementation: Implementation,
  spec: VmSpec = {},
): Promise<Vm> {
  const ramMiB = spec.ramMiB ?? 16;
  if (implementation === "qemu") {
    firmware ??= Deno.makeTempDir({ prefix: "livemig-differential-" })
      .then((dir) => buildFirmware({ IDLE: true }, dir));
    const qemu = await startQemu({
      firmware: await firmware,
      ramMiB,
      paused: false,
      ...(spec.incoming ? { incoming: "defer" } : {}),
    });
    return {
      qmp: qemu.qmp,
      events: recordEvents(qemu.qmp),
      exited: qemu.exited.then((status) => status.code),
      stop: () => qemu.stop(),
    };
  }
  const run = await startRun([
    "--ram",
    `${ramMiB}MiB`,
    ...(spec.incoming ? ["--incoming", "defer"] : []),
    ...(spec.prefill ? ["--prefill"] : []),
  ]);
  return {
    qmp: run.qmp,
    events: recordEvents(run.qmp),
    exited: run.child.status.then((status) => status.code),
    stop: () => run.kill(),
  };
}

function recordEvents(qmp: QmpClient): QmpEvent[] {
  const events: QmpEvent[] = [];
  void (async () => {
    for await (const event of qmp.events()) events.push(event);
  })();
  return events;
}

/** One thing a script wrote down. */
export interface Entry {
  /** Which guest. */
  conn: string;
  /** What was done, e.g. `migrate {"uri":"bogus:foo"}` or `events`. */
  what: string;
  /** What came back, reduced to what must be equal. */
  result: unknown;
}

/** Options for {@linkcode Script.execute}. */
export interface ExecuteOptions {
  /** Reduces the return value to what must be equal; by default it is kept whole. */
  shape?: (value: QmpValue) => unknown;
  /** Replaces parts of the arguments in the entry (ports that differ). */
  label?: string;
}

/** Runs the exchanges of a script on some guests and writes down the outcome. */
export class Script {
  readonly entries: Entry[] = [];
  readonly #vms: Readonly<Record<string, Vm>>;
  readonly #eventsSeen = new Map<string, number>();

  constructor(vms: Readonly<Record<string, Vm>>) {
    this.#vms = vms;
  }

  /** The guest called `conn`. */
  vm(conn: string): Vm {
    return this.#vms[conn]!;
  }

  /**
   * Runs a command; writes down its outcome (the error's class and desc,
   * or the return value through `shape`).
   *
   * @returns The return value, or the error.
   */
  async execute(
    conn: string,
    command: string,
    args?: Record<string, QmpValue>,
    options: ExecuteOptions = {},
  ): Promise<QmpValue | QmpError> {
    const what = `${command}${
      args === undefined ? "" : ` ${options.label ?? JSON.stringify(args)}`
    }`;
    try {
      const value = await this.vm(conn).qmp.execute<QmpValue>(command, args);
      this.entries.push({
        conn,
        what,
        result: { return: (options.shape ?? ((v) => v))(value) },
      });
      return value;
    } catch (error) {
      if (!(error instanceof QmpError)) throw error;
      this.entries.push({
        conn,
        what,
        result: { error: `${error.class}: ${error.desc}` },
      });
      return error;
    }
  }

  /**
   * Writes down the events `conn` received since the last call, by name
   * (`MIGRATION` with its status), without the iteration syncs: how many
   * `MIGRATION_PASS` events come while a migration is `active` depends on
   * the bandwidth measured and the time each pass took, so only the
   * setup pass and the final one (after `STOP`) are compared.
   */
  events(conn: string): void {
    const events = this.vm(conn).events;
    const from = this.#eventsSeen.get(conn) ?? 0;
    this.#eventsSeen.set(conn, events.length);
    this.entries.push({
      conn,
      what: "events",
      result: comparableEvents(events.slice(from).map(eventName)),
    });
  }

  /** Writes down a value the script found out otherwise. */
  note(conn: string, what: string, result: unknown): void {
    this.entries.push({ conn, what, result });
  }

  /**
   * Waits until `conn` received a `MIGRATION` event with `status` since
   * events were last written down.
   *
   * @throws {Error} After `timeoutMs`.
   */
  async waitForStatus(
    conn: string,
    status: string,
    timeoutMs = 30_000,
  ): Promise<void> {
    const events = this.vm(conn).events;
    const from = this.#eventsSeen.get(conn) ?? 0;
    const deadline = performance.now() + timeoutMs;
    while (
      !events.slice(from).some((e) =>
        e.event === "MIGRATION" && e.data.status === status
      )
    ) {
      if (performance.now() > deadline) {
        throw new Error(
          `Cannot wait for MIGRATION ${status} on ${conn}: got ${
            events.slice(from).map(eventName).join(", ")
          }`,
        );
      }
      await delay(10);
    }
  }

  /**
   * Polls `query-migrate` on `conn` (not written down) until `until` holds.
   *
   * @throws {Error} After `timeoutMs`.
   */
  async pollMigrate(
    conn: string,
    until: (info: Record<string, QmpValue>) => boolean,
    timeoutMs = 30_000,
  ): Promise<Record<string, QmpValue>> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const info = await this.vm(conn).qmp.execute<Record<string, QmpValue>>(
        "query-migrate",
      );
      if (until(info)) return info;
      if (performance.now() > deadline) {
        throw new Error(
          `Cannot reach the awaited state on ${conn}: ${JSON.stringify(info)}`,
        );
      }
      await delay(20);
    }
  }

  /** The port the incoming guest `conn` listens on. */
  async incomingPort(conn: string): Promise<string> {
    const info = await this.vm(conn).qmp.execute<
      { "socket-address"?: { port?: string }[] }
    >("query-migrate");
    const port = info["socket-address"]?.[0]?.port;
    if (port === undefined) {
      throw new Error(
        `Cannot find the port of ${conn}: ${JSON.stringify(info)}`,
      );
    }
    return port;
  }
}

/**
 * Event names as {@linkcode Script.events} writes them down, without the
 * `MIGRATION_PASS` events that come while `active`.
 */
export function comparableEvents(names: readonly string[]): string[] {
  const result: string[] = [];
  let active = false;
  for (const name of names) {
    if (name === "MIGRATION_PASS" && active) continue;
    active = name === "MIGRATION active";
    result.push(name);
  }
  return result;
}

/** A migration destination that only reads, and can stop reading. */
export interface TcpSink {
  /** The port it listens on. */
  readonly port: number;
  /** Stops reading: the source's writes block once the socket buffers are full. */
  pause(): void;
  /** Reads again. */
  resume(): void;
  /** Closes the listener and the connection. */
  close(): Promise<void>;
}

/**
 * Starts a sink on a free loopback port.
 *
 * @returns The sink.
 */
export function startTcpSink(): TcpSink {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let paused = false;
  let wake: (() => void) | undefined;
  let conn: Deno.Conn | undefined;
  void (async () => {
    try {
      conn = await listener.accept();
      const buffer = new Uint8Array(1 << 16);
      while (true) {
        while (paused) await new Promise<void>((resolve) => wake = resolve);
        if (await conn.read(buffer) === null) break;
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    pause: () => paused = true,
    resume() {
      paused = false;
      wake?.();
    },
    close() {
      paused = false;
      wake?.();
      try {
        listener.close();
      } catch {
        // closed already
      }
      try {
        conn?.close();
      } catch {
        // closed already
      }
      return Promise.resolve();
    },
  };
}

/** `MIGRATION setup`, `MIGRATION_PASS`, `STOP`, … */
export function eventName(event: QmpEvent): string {
  return event.event === "MIGRATION"
    ? `MIGRATION ${event.data.status}`
    : event.event;
}

/** The keys of an object, sorted: its shape. */
export function keys(value: QmpValue): string[] {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? Object.keys(value).sort()
    : [];
}

/** `query-migrate` reduced to its status, error-desc and which members it has. */
export function migrateShape(value: QmpValue): unknown {
  const info = value as Record<string, QmpValue>;
  return {
    status: info.status,
    "error-desc": info["error-desc"],
    keys: keys(value),
    ram: info.ram === undefined ? undefined : keys(info.ram),
    "socket-address": (info["socket-address"] as QmpValue[] | undefined)?.map(
      (address) => keys(address),
    ),
  };
}

/** HMP text reduced to its labels (the text before each `:`). */
export function textShape(value: QmpValue): string[] {
  return String(value).split("\r\n").map((line) => line.replace(/:.*/, ":"));
}

/** One entry where the two implementations answered differently. */
export interface Difference {
  /** The index of the entry. */
  index: number;
  /** Which guest. */
  conn: string;
  /** What was done. */
  what: string;
  /** QEMU's outcome. */
  qemu: unknown;
  /** livemig's outcome. */
  livemig: unknown;
}

/**
 * Compares two runs of a script entry by entry.
 *
 * @returns Every entry that differs (a missing entry counts).
 */
export function compareEntries(
  qemu: readonly Entry[],
  livemig: readonly Entry[],
): Difference[] {
  const differences: Difference[] = [];
  for (let i = 0; i < Math.max(qemu.length, livemig.length); i++) {
    const a = qemu[i];
    const b = livemig[i];
    if (
      a === undefined || b === undefined || a.what !== b.what ||
      stringify(a.result) !== stringify(b.result)
    ) {
      differences.push({
        index: i,
        conn: (a ?? b)!.conn,
        what: (a ?? b)!.what,
        qemu: a?.result,
        livemig: b?.result,
      });
    }
  }
  return differences;
}

/** JSON text of a written-down value (64-bit integers as bigints). */
export function stringify(value: unknown): string {
  return JSON.stringify(
    value,
    (_, v) => typeof v === "bigint" ? `${v}n` : v,
  );
}
