/**
 * A small QMP (QEMU Machine Protocol) client over a unix socket, for tests
 * and tools that drive a real QEMU.
 *
 * QMP is line-oriented JSON. On connect QEMU sends a greeting; the client
 * answers `qmp_capabilities` and may then send commands:
 *
 * ```
 * <- {"QMP": {"version": {...}, "capabilities": ["oob"]}}
 * -> {"execute": "qmp_capabilities", "id": 1}
 * <- {"return": {}, "id": 1}
 * -> {"execute": "query-status", "id": 2}
 * <- {"return": {"status": "running", ...}, "id": 2}
 * <- {"event": "STOP", "data": {}, "timestamp": {...}}     at any time
 * -> {"execute": "nope", "id": 3}
 * <- {"error": {"class": "CommandNotFound", "desc": "..."}, "id": 3}
 * ```
 *
 * Every command carries an `id`, so replies are matched even when several
 * commands are in flight. Events are collected as they arrive and handed out
 * by {@linkcode QmpClient.waitForEvent}.
 *
 * @module
 */

/** The QEMU version as the QMP greeting reports it. */
export interface QmpVersion {
  /** Numeric version. */
  qemu: { major: number; minor: number; micro: number };
  /** Distribution package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`. */
  package: string;
}

/** The greeting QEMU sends first on a QMP connection. */
export interface QmpGreeting {
  /** Greeting body. */
  QMP: { version: QmpVersion; capabilities: string[] };
}

/** An asynchronous QMP event. */
export interface QmpEvent {
  /** Event name, e.g. `STOP`, `RESUME`, `MIGRATION`, `MIGRATION_PASS`. */
  event: string;
  /** Event payload (`{}` when QEMU sends none). */
  data: Record<string, unknown>;
  /** When QEMU emitted the event. */
  timestamp: { seconds: number; microseconds: number };
}

/** Options for {@linkcode QmpError}. */
export interface QmpErrorOptions extends ErrorOptions {
  /** The command that failed. */
  command: string;
  /** QEMU's error class, e.g. `GenericError`, `CommandNotFound`. */
  errorClass: string;
  /** QEMU's human-readable error description. */
  desc: string;
}

/**
 * QEMU answered a command with an error.
 *
 * @example Usage
 * ```ts
 * import { QmpError } from "./qmp.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new QmpError({ command: "migrate", errorClass: "GenericError", desc: "bad uri" });
 * assert.equal(error.message, 'Cannot run QMP command "migrate": bad uri');
 * ```
 */
export class QmpError extends Error {
  /** The command that failed. */
  readonly command: string;
  /** QEMU's error class. */
  readonly errorClass: string;
  /** QEMU's error description (`error.desc`). */
  readonly desc: string;

  /**
   * Constructs a new instance.
   *
   * @param options The command, QEMU's error class and description.
   */
  constructor(options: QmpErrorOptions) {
    super(`Cannot run QMP command "${options.command}": ${options.desc}`, {
      cause: options.cause,
    });
    this.name = "QmpError";
    this.command = options.command;
    this.errorClass = options.errorClass;
    this.desc = options.desc;
  }
}

/**
 * The QMP connection failed, closed, or did not answer in time.
 *
 * @example Usage
 * ```ts
 * import { QmpConnectionError } from "./qmp.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(new QmpConnectionError("Cannot read: closed").name, "QmpConnectionError");
 * ```
 */
export class QmpConnectionError extends Error {
  /**
   * Constructs a new instance.
   *
   * @param message What failed, in sentence case, no period.
   * @param options The underlying cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QmpConnectionError";
  }
}

/**
 * The byte channel a {@linkcode QmpClient} talks over: a unix socket
 * connection (`Deno.UnixConn` fits as is) or QEMU's stdin/stdout when QMP
 * runs on `-chardev stdio`.
 */
export interface QmpTransport {
  /** Bytes from QEMU. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to QEMU. */
  readonly writable: WritableStream<Uint8Array>;
  /** Releases the channel; called once, after reading has stopped. */
  close(): void;
}

/** Options for {@linkcode QmpClient.connect}. */
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
}

/** Options for {@linkcode QmpClient.execute}. */
export interface QmpExecuteOptions {
  /**
   * Time limit for this command, in ms.
   *
   * @default {the client's commandTimeoutMs}
   */
  timeoutMs?: number;
}

interface PendingCommand {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

interface EventWaiter {
  name: string;
  predicate: (event: QmpEvent) => boolean;
  resolve(event: QmpEvent): void;
  reject(error: Error): void;
}

/**
 * A connected QMP client.
 *
 * @example Usage
 * ```ts ignore
 * import { QmpClient } from "./qmp.ts";
 *
 * const qmp = await QmpClient.connect("/tmp/vm/qmp.sock");
 * try {
 *   const status = await qmp.execute<{ status: string }>("query-status");
 *   await qmp.execute("stop");
 *   await qmp.waitForEvent("STOP", () => true, 5000);
 * } finally {
 *   await qmp.close();
 * }
 * ```
 */
export class QmpClient {
  readonly #transport: QmpTransport;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #commandTimeoutMs: number;
  readonly #pending = new Map<number, PendingCommand>();
  readonly #backlog: QmpEvent[] = [];
  readonly #received: QmpEvent[] = [];
  readonly #waiters = new Set<EventWaiter>();
  readonly #readLoop: Promise<void>;
  #greeting: QmpGreeting | undefined;
  readonly #greetingReceived: PromiseWithResolvers<QmpGreeting> = Promise
    .withResolvers();
  #nextId = 1;
  #closedError: Error | undefined;

  /**
   * Wraps an open channel. {@linkcode QmpClient.connect} does this for a
   * unix socket and also performs the handshake; after `new`, call
   * {@linkcode QmpClient.handshake} before any other command.
   *
   * @param transport The channel to QEMU's QMP monitor; the client owns it.
   * @param options Time limits.
   */
  constructor(transport: QmpTransport, options: QmpConnectOptions = {}) {
    this.#transport = transport;
    this.#reader = transport.readable.getReader();
    this.#writer = transport.writable.getWriter();
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 60_000;
    this.#readLoop = this.#read();
  }

  /**
   * Connects to the QMP unix socket at `path`, reads the greeting and enters
   * command mode (`qmp_capabilities`).
   *
   * @param path Path of QEMU's QMP unix socket.
   * @param options Time limits.
   * @returns The connected client.
   * @throws {QmpConnectionError} If QEMU does not greet or answer in time.
   */
  static async connect(
    path: string,
    options: QmpConnectOptions = {},
  ): Promise<QmpClient> {
    const conn = await Deno.connect({ transport: "unix", path });
    const client = new QmpClient(conn, options);
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
   * @throws {QmpConnectionError} If QEMU does not greet or answer in time.
   */
  async handshake(timeoutMs = 10_000): Promise<QmpGreeting> {
    const greeting = await withTimeout(
      this.#greetingPromise(),
      timeoutMs,
      () =>
        new QmpConnectionError(
          `Cannot start QMP: no greeting within ${timeoutMs} ms`,
        ),
    );
    await this.execute("qmp_capabilities", undefined, { timeoutMs });
    return greeting;
  }

  /** The greeting QEMU sent (version and QMP capabilities). */
  get greeting(): QmpGreeting {
    if (this.#greeting === undefined) {
      throw new QmpConnectionError("Cannot read greeting: none received yet");
    }
    return this.#greeting;
  }

  /** Every event received so far, oldest first, consumed or not. */
  get events(): readonly QmpEvent[] {
    return this.#received;
  }

  /**
   * Runs `command` and resolves with its `return` value.
   *
   * @typeParam T The shape of the `return` value.
   * @param command QMP command name, e.g. `query-migrate`.
   * @param args The command's `arguments` object, if any.
   * @param options Time limit.
   * @returns QEMU's `return` value.
   * @throws {QmpError} If QEMU answers with an error.
   * @throws {QmpConnectionError} If the connection closes or the time limit passes.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
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
    const message: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
    });
    const bytes = new TextEncoder().encode(JSON.stringify(message) + "\n");
    this.#writer.write(bytes).catch((error: unknown) => {
      this.#settle(id)?.reject(
        new QmpConnectionError(
          `Cannot send QMP command "${command}": write failed`,
          { cause: error },
        ),
      );
    });
    return withTimeout(reply, timeoutMs, () => {
      this.#pending.delete(id);
      return new QmpConnectionError(
        `Cannot run QMP command "${command}": no reply within ${timeoutMs} ms`,
      );
    }) as Promise<T>;
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
    const index = this.#backlog.findIndex((event) =>
      event.event === name && predicate(event)
    );
    if (index !== -1) {
      return Promise.resolve(this.#backlog.splice(index, 1)[0]!);
    }
    if (this.#closedError !== undefined) {
      return Promise.reject(
        new QmpConnectionError(
          `Cannot wait for QMP event "${name}": the connection is closed`,
          { cause: this.#closedError },
        ),
      );
    }
    let waiter: EventWaiter | undefined;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      waiter = { name, predicate, resolve, reject };
      this.#waiters.add(waiter);
    });
    return withTimeout(promise, timeoutMs, () => {
      if (waiter !== undefined) this.#waiters.delete(waiter);
      return new QmpConnectionError(
        `Cannot wait for QMP event "${name}": none within ${timeoutMs} ms`,
      );
    });
  }

  /**
   * Closes the connection. Pending commands and waits reject with
   * {@linkcode QmpConnectionError}. Closing twice is harmless.
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

  #greetingPromise(): Promise<QmpGreeting> {
    return this.#greetingReceived.promise;
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    let text = "";
    let cause: unknown = undefined;
    try {
      while (true) {
        const { done, value: chunk } = await this.#reader.read();
        if (done) break;
        text += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = text.indexOf("\n")) !== -1) {
          const line = text.slice(0, newline).trim();
          text = text.slice(newline + 1);
          if (line !== "") this.#dispatch(line);
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
    try {
      this.#transport.close();
    } catch {
      // already released by the other side
    }
  }

  #dispatch(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line);
    } catch (error) {
      this.#fail(
        new QmpConnectionError(`Cannot parse QMP message: ${line}`, {
          cause: error,
        }),
      );
      return;
    }
    if ("QMP" in message) {
      this.#greeting = message as unknown as QmpGreeting;
      this.#greetingReceived.resolve(this.#greeting);
    } else if (typeof message.event === "string") {
      const event: QmpEvent = {
        event: message.event,
        data: (message.data as Record<string, unknown> | undefined) ?? {},
        timestamp: message.timestamp as QmpEvent["timestamp"],
      };
      this.#received.push(event);
      for (const waiter of this.#waiters) {
        if (waiter.name === event.event && waiter.predicate(event)) {
          this.#waiters.delete(waiter);
          waiter.resolve(event);
          return;
        }
      }
      this.#backlog.push(event);
    } else if (typeof message.id === "number") {
      const pending = this.#settle(message.id);
      if (pending === undefined) return; // timed out earlier
      if ("error" in message) {
        const error = message.error as { class?: string; desc?: string };
        pending.reject(
          new QmpError({
            command: pending.command,
            errorClass: error.class ?? "GenericError",
            desc: error.desc ?? JSON.stringify(error),
          }),
        );
      } else {
        pending.resolve(message.return);
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
    this.#greetingReceived.promise.catch(() => {}); // nobody may be waiting
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
    for (const waiter of this.#waiters) {
      waiter.reject(
        new QmpConnectionError(
          `Cannot wait for QMP event "${waiter.name}": the connection closed`,
          { cause: error },
        ),
      );
    }
    this.#waiters.clear();
    this.#writer.close().catch(() => {});
  }
}

function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  onTimeout: () => Error,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
