/**
 * A small QMP client: the greeting, capabilities negotiation, commands with
 * typed errors, and events. It talks to QEMU and to livemig's
 * {@linkcode QmpServer} alike, over any {@linkcode Transport}.
 *
 * ```
 * <- {"QMP": {"version": {...}, "capabilities": ["oob"]}}
 * -> {"execute": "qmp_capabilities", "id": 1}
 * <- {"return": {}, "id": 1}
 * -> {"execute": "query-status", "id": 2}
 * <- {"return": {"status": "running", ...}, "id": 2}
 * <- {"timestamp": {...}, "event": "STOP"}              at any time
 * ```
 *
 * Every command carries a numeric `id`, so replies are matched even when
 * several commands are in flight. Replies are read as QEMU writes them:
 * integers beyond 2^53 arrive as bigints.
 *
 * @module
 */

import { connectTransport } from "../transport/open_transport.ts";
import type { Transport } from "../transport/transport.ts";
import { JsonReader, nodeValue } from "./_json_reader.ts";
import { QmpEventHub, withTimeout } from "./_qmp_event_hub.ts";
import { QmpConnectionError } from "./qmp_connection_error.ts";
import { QmpError } from "./qmp_error.ts";
import { formatQmpJson, type QmpValue } from "./qmp_json.ts";
import type { QmpVersion } from "./qmp_server.ts";

/** The greeting a QMP monitor sends first. */
export interface QmpGreeting {
  /** Greeting body. */
  QMP: { version: QmpVersion; capabilities: string[] };
}

/** An asynchronous QMP event. */
export interface QmpEvent {
  /** Event name, e.g. `STOP`, `RESUME`, `MIGRATION`, `MIGRATION_PASS`. */
  event: string;
  /** Event data (`{}` when the monitor sent none). */
  data: Record<string, QmpValue>;
  /** When the monitor emitted the event. */
  timestamp: { seconds: number; microseconds: number };
}

/** Options for {@linkcode QmpClient.connect} and the constructor. */
export interface QmpConnectOptions {
  /**
   * How long to wait for the greeting and the capabilities handshake, in ms.
   *
   * @default {10000}
   */
  timeoutMs?: number;
  /**
   * Default time limit for each command, in ms.
   *
   * @default {60000}
   */
  commandTimeoutMs?: number;
  /**
   * Enables the `oob` capability, so {@linkcode QmpClient.execute} may send
   * commands out of band.
   *
   * @default {false}
   */
  oob?: boolean;
}

/** Options for {@linkcode QmpClient.execute}. */
export interface QmpExecuteOptions {
  /**
   * Time limit for this command, in ms.
   *
   * @default {the client's commandTimeoutMs}
   */
  timeoutMs?: number;
  /**
   * Sends the command with `exec-oob` (needs `oob` at connection time and a
   * command that allows it, such as `migrate-pause` or `migrate-recover`).
   *
   * @default {false}
   */
  outOfBand?: boolean;
}

/** Options for {@linkcode QmpClient.events}. */
export interface QmpEventsOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal;
}

interface PendingCommand {
  command: string;
  resolve(value: QmpValue): void;
  reject(error: Error): void;
}

/**
 * A connected QMP client.
 *
 * @example Usage
 * ```ts
 * import { createMemoryTransportPair, QmpClient, QmpError, QmpServer } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const server = new QmpServer({ commands: {} });
 * const [near, far] = createMemoryTransportPair();
 * const served = server.handle(far);
 * const qmp = await QmpClient.connect(near);
 * assert.equal(qmp.greeting.QMP.version.qemu.major, 7);
 * await assert.rejects(qmp.execute("migrate-pause"), (error) =>
 *   error instanceof QmpError && error.class === "CommandNotFound" &&
 *   error.desc === "The command migrate-pause has not been found");
 * await qmp.close();
 * await served;
 * ```
 */
export class QmpClient {
  readonly #transport: Transport;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #commandTimeoutMs: number;
  readonly #oob: boolean;
  readonly #pending = new Map<number, PendingCommand>();
  readonly #events = new QmpEventHub();
  readonly #readLoop: Promise<void>;
  readonly #greetingReceived = Promise.withResolvers<QmpGreeting>();
  #greeting: QmpGreeting | undefined;
  #nextId = 1;
  #closedError: Error | undefined;

  /**
   * Wraps a connection to a monitor without negotiating: call
   * {@linkcode QmpClient.handshake} next, or use
   * {@linkcode QmpClient.connect}, which does both.
   *
   * @param transport The connection (a socket, or QEMU's stdin/stdout).
   * @param options Time limits and OOB.
   */
  constructor(transport: Transport, options: QmpConnectOptions = {}) {
    this.#transport = transport;
    this.#reader = transport.readable.getReader();
    this.#writer = transport.writable.getWriter();
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 60_000;
    this.#oob = options.oob ?? false;
    this.#greetingReceived.promise.catch(() => {}); // nobody may wait
    this.#readLoop = this.#read();
  }

  /**
   * Connects to a monitor, reads the greeting and negotiates capabilities.
   *
   * @param target The monitor's address (`unix:PATH`, `tcp:HOST:PORT`) or an open transport.
   * @param options Time limits and OOB.
   * @returns The connected client.
   * @throws {TransportError} If the address cannot be reached.
   * @throws {QmpConnectionError} If the monitor does not greet or answer in time.
   */
  static async connect(
    target: string | Transport,
    options: QmpConnectOptions = {},
  ): Promise<QmpClient> {
    const transport = typeof target === "string"
      ? await connectTransport(target)
      : target;
    const client = new QmpClient(transport, options);
    try {
      await client.handshake(options.timeoutMs);
      return client;
    } catch (error) {
      await client.close();
      throw error;
    }
  }

  /**
   * Waits for the greeting and sends `qmp_capabilities`.
   *
   * @param timeoutMs Time limit for both steps, in ms.
   * @returns The greeting.
   * @throws {QmpConnectionError} If the monitor does not greet or answer in time.
   */
  async handshake(timeoutMs = 10_000): Promise<QmpGreeting> {
    const greeting = await withTimeout(
      this.#greetingReceived.promise,
      timeoutMs,
      () =>
        new QmpConnectionError(
          `Cannot start QMP: no greeting within ${timeoutMs} ms`,
        ),
    );
    await this.execute(
      "qmp_capabilities",
      this.#oob ? { enable: ["oob"] } : undefined,
      { timeoutMs },
    );
    return greeting;
  }

  /** The greeting the monitor sent (version and QMP capabilities). */
  get greeting(): QmpGreeting {
    if (this.#greeting === undefined) {
      throw new QmpConnectionError("Cannot read greeting: none received yet");
    }
    return this.#greeting;
  }

  /**
   * Runs `command` and resolves with its `return` value.
   *
   * @typeParam T The shape of the `return` value.
   * @param command QMP command name, e.g. `query-migrate`.
   * @param args The command's `arguments` object, if any.
   * @param options Time limit, out of band.
   * @returns The `return` value.
   * @throws {QmpError} If the monitor answers with an error.
   * @throws {QmpConnectionError} If the connection closes or the time limit passes.
   */
  execute<T = unknown>(
    command: string,
    args?: Readonly<Record<string, QmpValue>>,
    options: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#closedError !== undefined) {
      return Promise.reject(
        new QmpConnectionError(
          `Cannot run QMP command "${command}": the connection is closed`,
          { cause: this.#closedError },
        ),
      );
    }
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    const id = this.#nextId++;
    const text = formatQmpJson({
      [options.outOfBand ? "exec-oob" : "execute"]: command,
      arguments: args,
      id,
    });
    const reply = new Promise<QmpValue>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
    });
    this.#writer.write(new TextEncoder().encode(text + "\n")).catch(
      (error: unknown) => {
        this.#settle(id)?.reject(
          new QmpConnectionError(
            `Cannot send QMP command "${command}": write failed`,
            { cause: error },
          ),
        );
      },
    );
    return withTimeout(reply, timeoutMs, () => {
      this.#pending.delete(id);
      return new QmpConnectionError(
        `Cannot run QMP command "${command}": no reply within ${timeoutMs} ms`,
      );
    }) as Promise<T>;
  }

  /**
   * The events received from now on, as they come. The iteration ends when
   * the connection closes or the signal aborts. Each call iterates on its
   * own; {@linkcode QmpClient.waitForEvent} is not affected.
   *
   * @example Usage
   * ```ts
   * import { createMemoryTransportPair, QmpClient, QmpServer } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const server = new QmpServer({ commands: {} });
   * const [near, far] = createMemoryTransportPair();
   * const served = server.handle(far);
   * const qmp = await QmpClient.connect(near);
   * const events = qmp.events();
   * server.emit("STOP");
   * server.emit("RESUME");
   * const names = [];
   * for await (const event of events) {
   *   names.push(event.event);
   *   if (names.length === 2) break;
   * }
   * assert.deepEqual(names, ["STOP", "RESUME"]);
   * await qmp.close();
   * await served;
   * ```
   *
   * @param options A signal that ends the iteration.
   * @returns An async iterator of events.
   */
  events(options: QmpEventsOptions = {}): AsyncIterableIterator<QmpEvent> {
    return this.#events.events(options.signal);
  }

  /**
   * Waits for an event called `name` that satisfies `predicate`.
   *
   * Events received earlier and not yet handed out by a previous call are
   * searched first, so an event that arrives between a command and this call
   * is not lost. The matching event is consumed: the next call waits for a
   * later one.
   *
   * @param name Event name, e.g. `MIGRATION`.
   * @param predicate Extra condition on the event.
   * @param timeoutMs How long to wait, in ms.
   * @returns The event.
   * @throws {QmpConnectionError} If the time limit passes or the connection closes.
   */
  waitForEvent(
    name: string,
    predicate: (event: QmpEvent) => boolean = () => true,
    timeoutMs = 30_000,
  ): Promise<QmpEvent> {
    return this.#events.waitFor(name, predicate, timeoutMs);
  }

  /**
   * Closes the connection. Pending commands and waits reject with
   * {@linkcode QmpConnectionError}; event iterations end. Closing twice is
   * harmless.
   */
  async close(): Promise<void> {
    if (this.#closedError === undefined) {
      this.#fail(
        new QmpConnectionError("Cannot use QMP: closed by the client"),
      );
      await this.#reader.cancel().catch(() => {});
    }
    await this.#readLoop;
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    const json = new JsonReader();
    let cause: unknown = undefined;
    try {
      while (this.#closedError === undefined) {
        const { done, value } = await this.#reader.read();
        if (done) break;
        for (
          const result of json.push(decoder.decode(value, { stream: true }))
        ) {
          if (result.kind === "error") {
            throw new QmpConnectionError(
              `Cannot read from QMP: ${result.desc}`,
            );
          }
          this.#dispatch(nodeValue(result.value));
        }
      }
    } catch (error) {
      cause = error;
    }
    this.#fail(
      new QmpConnectionError("Cannot read from QMP: the connection closed", {
        cause,
      }),
    );
    await this.#transport.close().catch(() => {});
  }

  #dispatch(value: QmpValue): void {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return;
    }
    const message = value as Record<string, QmpValue>;
    if ("QMP" in message) {
      this.#greeting = message as unknown as QmpGreeting;
      this.#greetingReceived.resolve(this.#greeting);
    } else if (typeof message.event === "string") {
      this.#events.deliver({
        event: message.event,
        data: (message.data as Record<string, QmpValue> | undefined) ?? {},
        timestamp: message.timestamp as QmpEvent["timestamp"],
      });
    } else if (typeof message.id === "number") {
      const pending = this.#settle(message.id);
      if (pending === undefined) return; // timed out earlier
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(
          new QmpError({
            command: pending.command,
            class: error.class ?? "GenericError",
            desc: error.desc ?? JSON.stringify(error),
          }),
        );
      } else {
        pending.resolve(message.return ?? null);
      }
    }
  }

  #settle(id: number): PendingCommand | undefined {
    const pending = this.#pending.get(id);
    this.#pending.delete(id);
    return pending;
  }

  #fail(error: Error): void {
    if (this.#closedError !== undefined) return;
    this.#closedError = error;
    this.#greetingReceived.reject(
      new QmpConnectionError("Cannot start QMP: the connection closed first", {
        cause: error,
      }),
    );
    for (const pending of this.#pending.values()) {
      pending.reject(
        new QmpConnectionError(
          `Cannot run QMP command "${pending.command}": the connection closed`,
          { cause: error },
        ),
      );
    }
    this.#pending.clear();
    this.#events.close(error);
    this.#writer.close().catch(() => {});
  }
}
