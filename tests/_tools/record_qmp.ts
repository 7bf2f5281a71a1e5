/**
 * Records how QEMU 7.2 answers on its QMP monitor, as ground truth for
 * livemig's control plane (`lib/qmp/`), into `fixtures/qmp/qemu-7.2/`.
 *
 * ```sh
 * npx -y deno@2.9.6 task qmp-fixtures                # every scenario
 * npx -y deno@2.9.6 task qmp-fixtures precopy        # only the named one(s)
 * ```
 *
 * Each scenario starts one or two QEMU 7.2 processes with livemig's own
 * firmware (TCG, `-nodefaults`, QMP on a unix socket in a private temp dir),
 * connects to their monitors at the byte level, runs a script of exchanges
 * and writes everything that crossed the monitors, in the order it
 * happened, to `<scenario>.json`:
 *
 * ```
 * {"conn": "src", "connect": true}                    a client connected
 * {"conn": "src", "greeting": {...}, "raw": "..."}    the first line QEMU sent
 * {"conn": "src", "send": "{\"execute\": ...}\n"}      exactly the bytes written
 * {"conn": "src", "reply": {...}, "raw": "..."}       a reply line (raw: the line as QEMU wrote it, CRLF removed)
 * {"conn": "src", "event": "STOP", "data": {...}}     an event, its timestamp dropped (no data: QEMU sent none)
 * {"conn": "src", "close": true}                      the client closed the connection
 * {"conn": "src", "closed": true}                     QEMU closed it
 * {"note": "..."}                                     what the script does next
 * ```
 *
 * Values that change from run to run (times, ports, byte counts) are kept as
 * QEMU sent them. Exchanges the script only uses to wait (polling
 * `query-migrate`) are not recorded; events are always recorded. Besides the
 * transcripts, `schema.json` keeps the part of `query-qmp-schema` that
 * describes the commands livemig's monitor serves.
 *
 * Nothing is installed: without `qemu-system-x86_64` 7.2 and `nasm` on PATH
 * the tool says so and exits with code 1. Every QEMU it starts is stopped by
 * its pid; at most two run at a time.
 *
 * @module
 */

import {
  buildFirmware,
  type FirmwareDefines,
  type QemuInstance,
  type QemuOptions,
  qemuSkipReason,
  qemuVersion,
  startQemu,
} from "../_helpers/qemu.ts";
import { delay } from "../_helpers/delay.ts";

const OUTPUT = new URL("../../fixtures/qmp/qemu-7.2/", import.meta.url);

/** The idle firmware: writes its status and pattern pages, then halts. */
const IDLE_FIRMWARE: FirmwareDefines = {
  IDLE: true,
  STATUS_ADDR: 0x1000,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/** Dirties one byte of 32 pages per pass, so precopy keeps iterating. */
const DIRTY_FIRMWARE: FirmwareDefines = {
  DIRTY_START: 0x100000,
  DIRTY_END: 0x120000,
  DIRTY_OFFSET: 0x80,
  PAUSE: 0x20000,
  STATUS_ADDR: 0x1000,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/** Dirties every page of 0x100000-0x7000000 (112 MiB): RAM full of non-zero pages. */
const BIG_DIRTY_FIRMWARE: FirmwareDefines = {
  DIRTY_START: 0x100000,
  DIRTY_END: 0x7000000,
  DIRTY_OFFSET: 0x80,
  PAUSE: 0x100,
  STATUS_ADDR: 0x1000,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/** One recorded line of the transcript. */
type Entry = Record<string, unknown>;

/** How long to wait for a reply or an event before giving up, in ms. */
const REPLY_TIMEOUT_MS = 30_000;

/** How long to watch for lines that should not come, in ms. */
const QUIET_MS = 400;

function log(message: string): void {
  // deno-lint-ignore no-console
  console.log(message);
}

function logError(message: string): void {
  // deno-lint-ignore no-console
  console.error(message);
}

/**
 * One client connection to a QMP socket, at the byte level: every line QEMU
 * writes is recorded when it arrives; replies are handed to whoever waits.
 */
class Monitor {
  readonly name: string;
  readonly #conn: Deno.UnixConn;
  readonly #recording: Recording;
  readonly #replies: { entry: Entry; value: unknown }[] = [];
  readonly #events: { event: string; data: unknown }[] = [];
  /** For each reply still expected, whether to record it. */
  readonly #expected: boolean[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  readonly #reading: Promise<void>;

  constructor(name: string, conn: Deno.UnixConn, recording: Recording) {
    this.name = name;
    this.#conn = conn;
    this.#recording = recording;
    this.#reading = this.#read();
  }

  get closed(): boolean {
    return this.#closed;
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    let text = "";
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const count = await this.#conn.read(buffer);
        if (count === null) break;
        text += decoder.decode(buffer.subarray(0, count), { stream: true });
        let newline: number;
        while ((newline = text.indexOf("\n")) !== -1) {
          const line = text.slice(0, newline);
          text = text.slice(newline + 1);
          this.#line(line);
        }
      }
    } catch {
      // closed by us
    }
    if (!this.#closed) {
      this.#closed = true;
      this.#recording.add({ conn: this.name, closed: true });
    }
    this.#notify();
  }

  #line(line: string): void {
    const raw = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (!line.endsWith("\r")) {
      this.#recording.add({ conn: this.name, "missing-cr": true });
    }
    const value = JSON.parse(raw) as Record<string, unknown>;
    if ("QMP" in value) {
      this.#recording.add({ conn: this.name, greeting: value, raw });
      this.#replies.push({ entry: {}, value });
    } else if (typeof value.event === "string") {
      const entry: Entry = { conn: this.name, event: value.event };
      if ("data" in value) entry.data = value.data;
      this.#recording.add(entry);
      this.#events.push({ event: value.event, data: value.data });
    } else {
      const record = this.#expected.shift();
      const entry: Entry = { conn: this.name, reply: value, raw };
      if (record === undefined) entry.unexpected = true;
      if (record !== false) this.#recording.add(entry);
      this.#replies.push({ entry, value });
    }
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #waitFor<T>(
    take: () => T | undefined,
    what: string,
    timeoutMs: number,
  ): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const value = take();
      if (value !== undefined) return value;
      if (this.#closed) {
        throw new Error(`Cannot wait for ${what} on ${this.name}: closed`);
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(
          `Cannot wait for ${what} on ${this.name}: none within ${timeoutMs} ms`,
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Waits for the greeting. */
  async greeting(timeoutMs = REPLY_TIMEOUT_MS): Promise<unknown> {
    const { value } = await this.#waitFor(
      () => this.#replies.shift(),
      "the greeting",
      timeoutMs,
    );
    return value;
  }

  /** Whether the greeting is not there yet after `ms`. */
  async silentFor(ms: number): Promise<boolean> {
    await delay(ms);
    return this.#replies.length === 0;
  }

  /**
   * Writes `text` and waits for `replies` reply lines.
   *
   * @returns The replies, parsed.
   */
  async send(
    text: string,
    options: { replies?: number; record?: boolean; wait?: boolean } = {},
  ): Promise<unknown[]> {
    const { replies = 1, record = true, wait = true } = options;
    if (record) this.#recording.add({ conn: this.name, send: text });
    for (let i = 0; i < replies; i++) this.#expected.push(record);
    await this.#conn.write(new TextEncoder().encode(text));
    if (!wait) return [];
    if (replies === 0) {
      await delay(QUIET_MS);
      return [];
    }
    const values: unknown[] = [];
    for (let i = 0; i < replies; i++) {
      const { value } = await this.#waitFor(
        () => this.#replies.shift(),
        `reply ${i + 1} of ${replies} to ${text.trim()}`,
        REPLY_TIMEOUT_MS,
      );
      values.push(value);
    }
    return values;
  }

  /**
   * Runs one command and returns its `return` value (or the whole reply
   * when it is an error).
   */
  async execute(
    command: string,
    args?: Record<string, unknown>,
    options: { record?: boolean; id?: unknown } = {},
  ): Promise<unknown> {
    const message: Record<string, unknown> = { execute: command };
    if (args !== undefined) message.arguments = args;
    if (options.id !== undefined) message.id = options.id;
    const [reply] = await this.send(
      JSON.stringify(message) + "\n",
      options.record === undefined ? {} : { record: options.record },
    );
    const value = reply as Record<string, unknown>;
    return "return" in value ? value.return : value;
  }

  /**
   * Waits up to `timeoutMs` for replies to a {@linkcode Monitor.send} made
   * with `wait: false`.
   *
   * @returns How many arrived (at most `count`).
   */
  async collect(count: number, timeoutMs: number): Promise<number> {
    let received = 0;
    try {
      for (; received < count; received++) {
        await this.#waitFor(
          () => this.#replies.shift(),
          "a reply",
          timeoutMs,
        );
      }
    } catch {
      // fewer arrived in time
    }
    return received;
  }

  /** Waits for an event (already received ones first). */
  waitForEvent(
    event: string,
    predicate: (data: unknown) => boolean = () => true,
    timeoutMs = REPLY_TIMEOUT_MS,
  ): Promise<unknown> {
    return this.#waitFor(
      () => {
        const index = this.#events.findIndex((e) =>
          e.event === event && predicate(e.data)
        );
        if (index === -1) return undefined;
        return this.#events.splice(index, 1)[0]!.data ?? {};
      },
      `event ${event}`,
      timeoutMs,
    );
  }

  /** Forgets the events received so far (they stay recorded). */
  forgetEvents(): void {
    this.#events.length = 0;
  }

  /** Polls `query-migrate` (unrecorded) until `until` holds. */
  async pollMigrate(
    until: (info: Record<string, unknown>) => boolean,
    timeoutMs = REPLY_TIMEOUT_MS,
  ): Promise<Record<string, unknown>> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const info = await this.execute("query-migrate", undefined, {
        record: false,
      }) as Record<string, unknown>;
      if (until(info)) return info;
      if (performance.now() > deadline) {
        throw new Error(
          `Cannot reach the awaited migration state on ${this.name}: ${
            JSON.stringify(info).slice(0, 300)
          }`,
        );
      }
      await delay(20);
    }
  }

  /** Closes the connection from our side. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#recording.add({ conn: this.name, close: true });
      try {
        this.#conn.close();
      } catch {
        // already gone
      }
    }
    await this.#reading;
  }
}

/** A QEMU the scenario started, and where its monitor socket is. */
interface Vm {
  qemu: QemuInstance;
  socket: string;
  args: readonly string[];
}

/** The transcript of one scenario and the processes it uses. */
class Recording {
  readonly transcript: Entry[] = [];
  readonly vms = new Map<string, Vm>();
  readonly monitors: Monitor[] = [];
  readonly work: string;
  readonly #sinks: TcpSink[] = [];

  constructor(work: string) {
    this.work = work;
  }

  add(entry: Entry): void {
    this.transcript.push(entry);
  }

  note(text: string): void {
    log(`  ${text}`);
    this.add({ note: text });
  }

  /** Starts a QEMU; its monitor is free for {@linkcode Recording.connect}. */
  async start(
    name: string,
    options: Omit<QemuOptions, "qmp">,
  ): Promise<Vm> {
    const qemu = await startQemu({ ...options, qmp: "unix" });
    // The helper's own client negotiated already; QEMU serves one client at
    // a time, so let it go and connect afresh at the byte level.
    await qemu.qmp.close();
    const vm: Vm = {
      qemu,
      socket: `${qemu.tempDir}/qmp.sock`,
      args: qemu.commandLine.slice(1).map((arg) =>
        arg.replaceAll(qemu.tempDir, "$QEMU_TMP").replaceAll(
          this.work,
          "$WORK",
        )
      ),
    };
    this.vms.set(name, vm);
    return vm;
  }

  /** Connects a client to a VM's monitor; does not wait for the greeting. */
  async connect(name: string, vm: Vm): Promise<Monitor> {
    const conn = await Deno.connect({ transport: "unix", path: vm.socket });
    this.add({ conn: name, connect: true });
    const monitor = new Monitor(name, conn, this);
    this.monitors.push(monitor);
    return monitor;
  }

  /** Connects, reads the greeting and negotiates (both recorded). */
  async open(
    name: string,
    vm: Vm,
    capabilities?: Record<string, unknown>,
  ): Promise<Monitor> {
    const monitor = await this.connect(name, vm);
    await monitor.greeting();
    await monitor.execute("qmp_capabilities", capabilities);
    return monitor;
  }

  async sink(): Promise<TcpSink> {
    const sink = new TcpSink();
    this.#sinks.push(sink);
    return await Promise.resolve(sink);
  }

  async dispose(): Promise<void> {
    for (const monitor of this.monitors) await monitor.close();
    for (const sink of this.#sinks) sink.close();
    for (const vm of this.vms.values()) await vm.qemu.stop();
  }
}

/**
 * A TCP listener that accepts one migration and reads it, or stops reading
 * when paused, so the sender blocks once the socket buffers are full.
 */
class TcpSink {
  readonly #listener: Deno.TcpListener;
  #conn: Deno.TcpConn | undefined;
  #paused = false;
  #resume: (() => void) | undefined;
  bytes = 0;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#serve();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  async #serve(): Promise<void> {
    try {
      this.#conn = await this.#listener.accept();
    } catch {
      return;
    }
    const buffer = new Uint8Array(1 << 16);
    try {
      while (true) {
        if (this.#paused) {
          await new Promise<void>((resolve) => this.#resume = resolve);
        }
        const count = await this.#conn.read(buffer);
        if (count === null) break;
        this.bytes += count;
      }
    } catch {
      // closed
    }
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#resume?.();
    this.#resume = undefined;
  }

  close(): void {
    this.resume();
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    try {
      this.#conn?.close();
    } catch {
      // closed
    }
  }
}

/** One scenario: a file name, what it pins, and its script. */
interface Scenario {
  name: string;
  description: string;
  /**
   * Runs the script.
   *
   * @param lastAttempt Whether this is the last try: a script that prefers
   *   one of several outcomes QEMU may pick takes whatever comes then.
   */
  run(
    recording: Recording,
    firmware: Firmwares,
    lastAttempt: boolean,
  ): Promise<void>;
}

/** The firmware images, built once per run. */
interface Firmwares {
  idle: string;
  dirty: string;
  bigDirty: string;
}

/** `{"capabilities": [...]}` for migrate-set-capabilities. */
function caps(
  states: Record<string, boolean>,
): { capabilities: { capability: string; state: boolean }[] } {
  return {
    capabilities: Object.entries(states).map(([capability, state]) => ({
      capability,
      state,
    })),
  };
}

/** The TCP port a destination listens on, from its query-migrate. */
async function incomingPort(monitor: Monitor): Promise<number> {
  const info = await monitor.pollMigrate((info) =>
    Array.isArray(info["socket-address"])
  );
  const address = (info["socket-address"] as { port: string }[])[0]!;
  return Number(address.port);
}

/**
 * A running source and a destination started with `-incoming defer`, both
 * with a monitor open, the destination listening on a free port with
 * events on.
 */
async function deferredPair(
  rec: Recording,
  source: string,
  destination: string,
): Promise<{ s: Monitor; d: Monitor; port: number }> {
  const src = await rec.start("src", { firmware: source, paused: false });
  const dst = await rec.start("dst", {
    firmware: destination,
    paused: false,
    incoming: "defer",
  });
  const s = await rec.open("src", src);
  const d = await rec.open("dst", dst);
  await d.execute("migrate-set-capabilities", caps({ events: true }));
  await d.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  return { s, d, port: await incomingPort(d) };
}

/** Waits for the MIGRATION event with `status`. */
function waitStatus(monitor: Monitor, status: string): Promise<unknown> {
  return monitor.waitForEvent(
    "MIGRATION",
    (data) => (data as { status: string }).status === status,
  );
}

const INFO_MIGRATE = { "command-line": "info migrate" };

/** A raw line, sent as is. */
function line(text: string): string {
  return text + "\n";
}

const SCENARIOS: readonly Scenario[] = [
  {
    name: "protocol",
    description:
      "The wire protocol on a paused (-S) guest: greeting, capabilities negotiation, id echo, malformed input, argument errors, JSON output escapes, OOB, and a second client waiting for the first.",
    async run(rec, fw) {
      const vm = await rec.start("vm", { firmware: fw.idle, paused: true });
      const qmp = await rec.connect("qmp", vm);
      await qmp.greeting();
      rec.note("commands before qmp_capabilities");
      await qmp.send(line('{"execute": "query-status"}'));
      await qmp.send(line('{"execute": "query-status", "id": 1}'));
      await qmp.send(line('{"execute": "no-such-command", "id": 2}'));
      await qmp.send(line('{"execute": "stop", "id": 3}'));
      await qmp.send(line('{"id": 4}'));
      await qmp.send(line('{"execute": "query-status", "extra": 1, "id": 5}'));
      await qmp.send(line("[1]"));
      await qmp.send(
        line(
          '{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}, "id": 6}',
        ),
      );
      await qmp.send(
        line(
          '{"execute": "qmp_capabilities", "arguments": {"extra": 1}, "id": 7}',
        ),
      );
      await qmp.send(
        line(
          '{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 8}',
        ),
      );
      rec.note("negotiation");
      await qmp.send(line('{"execute": "qmp_capabilities", "id": "neg"}'));
      await qmp.send(line('{"execute": "qmp_capabilities", "id": 9}'));
      await qmp.send(line('{"execute": "qmp_capabilities"}'));
      rec.note("unknown command");
      await qmp.send(line('{"execute": "no-such-command"}'));
      await qmp.send(line('{"execute": "no-such-command", "id": 10}'));
      await qmp.send(line('{"execute": "calculate-dirty-rate", "id": 11}'));
      rec.note("id is echoed whatever JSON value it is");
      for (
        const id of [
          '"a/b\\u00e9\\u0001\\t\\ud83d\\ude00<>&\'\\u007f"',
          "1.5",
          "1e300",
          "0.1",
          "-0",
          "-0.0",
          "1.0",
          "1e5",
          "1E-7",
          "12345678901234567890",
          "18446744073709551616",
          "-9223372036854775808",
          "-9223372036854775809",
          "null",
          "true",
          "false",
          "[]",
          "[1, [2, {}]]",
          '{"b": 1, "a": [true]}',
          '{"execute": 1, "id": 2, "return": 3, "error": 4, "desc": 5, "class": 6}',
          '"caf\\u00e9"',
          '"\\u0000"',
          "'single \"quoted\"'",
        ]
      ) {
        await qmp.send(line(`{"execute": "query-version", "id": ${id}}`));
      }
      await qmp.send(line('{"execute": "query-version", "id": "café ☃"}'));
      rec.note("malformed input");
      for (
        const [text, replies] of [
          ["x", 1],
          ['xyz {"execute": "query-status", "id": "after-xyz"}', 2],
          ["}", 1],
          ["]", 1],
          ['{"execute" "query-status"}', 1],
          ['{"execute": "query-status",}', 1],
          ['{"execute": "query-status", "id": 1, "id": 2}', 1],
          ['{"a": @}', 2],
          ['{"execute": "query-status", "id": "\\x"}', 1],
          ['{"execute": "query-status", "id": "\\u12"}', 1],
          ['{"execute": "query-status", "id": "\\ud800"}', 1],
          ['{"execute": "query-status", "id": "\\ud800\\u0041"}', 1],
          ['{"execute": "query-status", "id": 01}', 2],
          ['{"execute": "query-status", "id": 1.}', 1],
          ['{"execute": "query-status", "id": +1}', 2],
          ['{"execute": "query-status", "id": %d}', 2],
          ['{"execute": "query-status", "id": "tab\there"}', 2],
          ['{"execute": "query-status", "id": 5}}', 2],
          ["nul", 1],
          ["True", 1],
          ["tRue", 2],
          ["{1: 2}", 1],
          ['{"a": 1 "b": 2}', 1],
          ['{"a"}', 1],
          ["{,}", 1],
          ['{"a": 1,}', 1],
          ["[1 2]", 1],
          ["[1,]", 1],
          ["[,1]", 1],
          ["[1}", 1],
          ['{"a": 1]', 1],
          ["-", 1],
          ["-x", 0],
          ["1e", 1],
          ["1e+", 0],
          ["1.5e-3x", 2],
          ['{"execute": "query-status", "id": "\\u00zz"}', 1],
          ['{"execute": "query-status", "id": "\\uDC00"}', 1],
          ['{"execute": "query-status", "id": "\\ud800\\udc00"}', 1],
          [
            '{"execute": "query-status", "id": "\\/\\b\\f\\n\\r\\t\\"\\\\\\\'"}',
            1,
          ],
          ['{"execute": "query-status", "id": \'\\\'\\"\'}', 1],
          ['{"execute": "query-status", "id": "\u007f\u0080\u00ff"}', 1],
          ["[".repeat(1025), 1],
          ["[".repeat(1024) + "]".repeat(1024), 1],
          ["null", 1],
          ["true", 1],
          ["1", 1],
          ['"str"', 1],
          ["{}", 1],
          ['{"execute": 1}', 1],
          ['{"execute": 1, "id": 12}', 1],
          ['{"execute": "query-status", "arguments": [], "id": 13}', 1],
          ['{"execute": "query-status", "arguments": null, "id": 14}', 1],
          ['{"execute": "query-status", "extra": 1, "id": 15}', 1],
          ['{"execute": "query-status", "control": {}, "id": 16}', 1],
          ['{"exec-oob": "query-status", "id": 17}', 1],
          [
            '{"execute": "query-status", "exec-oob": "query-status", "id": 18}',
            1,
          ],
          ["", 0],
          ["   ", 0],
        ] as const
      ) {
        await qmp.send(line(text), { replies });
      }
      rec.note("a string cut by a newline, then a command on the next line");
      await qmp.send('{"foo\n', { replies: 1 });
      await qmp.send(line('{"execute": "query-status", "id": "after-foo"}'));
      rec.note("a command split over two writes and lines");
      await qmp.send('{"execute":\n', { replies: 0 });
      await qmp.send(line('"query-status", "id": "split"}'));
      rec.note("two commands in one write, and CRLF");
      await qmp.send(
        '{"execute": "query-status", "id": "one"}{"execute": "query-version", "id": "two"}\r\n',
        { replies: 2 },
      );
      rec.note("an unbalanced bracket swallows what follows until it closes");
      await qmp.send(line('{"a": [}'), { replies: 0 });
      await qmp.send(line('{"execute": "query-status", "id": "swallowed"}'), {
        replies: 0,
      });
      await qmp.send(line("]}"), { replies: 2 });
      await qmp.send(
        line('{"execute": "query-status", "id": "after-unbalanced"}'),
      );
      rec.note("nesting");
      await qmp.send(line("[[[["), { replies: 0 });
      await qmp.send(line("]]]]"), { replies: 1 });
      rec.note("a NUL byte");
      await qmp.send("\u0000\n", { replies: 1 });
      await qmp.send(line('{"execute": "query-status", "id": "after-nul"}'));
      rec.note("arguments");
      for (
        const text of [
          '{"execute": "query-status", "arguments": {}, "id": 20}',
          '{"execute": "query-status", "arguments": {"a": 1}, "id": 21}',
          '{"execute": "query-status", "arguments": {"a": 1, "b": 2}, "id": 22}',
          '{"execute": "migrate", "id": 23}',
          '{"execute": "migrate", "arguments": {}, "id": 24}',
          '{"execute": "migrate", "arguments": {"uri": 1}, "id": 25}',
          '{"execute": "migrate", "arguments": {"uri": null}, "id": 26}',
          '{"execute": "migrate", "arguments": {"uri": "bogus:foo", "foo": 1}, "id": 27}',
          '{"execute": "migrate", "arguments": {"foo": 1}, "id": 28}',
          '{"execute": "migrate", "arguments": {"uri": "bogus:foo", "detach": 1}, "id": 29}',
          '{"execute": "migrate", "arguments": {"uri": "bogus:foo", "detach": "yes"}, "id": 30}',
          '{"execute": "migrate", "arguments": {"uri": "bogus:foo", "resume": null}, "id": 31}',
          '{"execute": "migrate", "arguments": {"uri": "bogus:foo", "blk": true}, "id": 32}',
          '{"execute": "migrate-incoming", "arguments": {"uri": []}, "id": 33}',
          '{"execute": "migrate-continue", "id": 34}',
          '{"execute": "migrate-continue", "arguments": {"state": "bogus"}, "id": 35}',
          '{"execute": "migrate-continue", "arguments": {"state": 1}, "id": 36}',
          '{"execute": "migrate-set-capabilities", "id": 37}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": {}}, "id": 38}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [1]}, "id": 39}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "xbzrle"}]}, "id": 40}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"state": true}]}, "id": 41}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "xbzrle", "state": 1}]}, "id": 42}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": 1, "state": true}]}, "id": 43}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "xbzrle", "state": true, "x": 1}]}, "id": 44}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "xbzrle", "state": false}, {"capability": "events"}]}, "id": 45}',
          '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": []}, "id": 46}',
          '{"execute": "migrate-recover", "id": 47}',
          '{"execute": "human-monitor-command", "id": 48}',
          '{"execute": "human-monitor-command", "arguments": {"command-line": 1}, "id": 49}',
          '{"execute": "human-monitor-command", "arguments": {"command-line": "info migrate", "cpu-index": "x"}, "id": 50}',
          '{"execute": "calc-dirty-rate", "id": 51}',
          '{"execute": "calc-dirty-rate", "arguments": {"calc-time": "x"}, "id": 52}',
          '{"execute": "calc-dirty-rate", "arguments": {"calc-time": 1.5}, "id": 53}',
          '{"execute": "calc-dirty-rate", "arguments": {"calc-time": 1, "mode": "bogus"}, "id": 54}',
          '{"execute": "calc-dirty-rate", "arguments": {"calc-time": 9223372036854775808}, "id": 55}',
        ]
      ) {
        await qmp.send(line(text));
      }
      rec.note(
        "a second client while the first is connected: QEMU serves one client at a time",
      );
      const second = await rec.connect("second", vm);
      const waited = await second.silentFor(600);
      rec.note(
        waited
          ? "the second client got nothing while the first was connected"
          : "the second client was greeted while the first was connected",
      );
      await qmp.close();
      await second.greeting();
      rec.note("the second client negotiates OOB");
      await second.send(
        line(
          '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "oob"}',
        ),
      );
      for (
        const text of [
          '{"exec-oob": "migrate-pause", "id": 1}',
          '{"exec-oob": "migrate-recover", "arguments": {"uri": "tcp:127.0.0.1:1"}, "id": 2}',
          '{"exec-oob": "query-status", "id": 3}',
          '{"exec-oob": "migrate-pause"}',
          '{"exec-oob": "no-such-command", "id": 4}',
          '{"exec-oob": 1, "id": 5}',
          '{"execute": "query-status", "exec-oob": "migrate-pause", "id": 6}',
          '{"execute": "query-status"}',
        ]
      ) {
        await second.send(line(text));
      }
      await second.close();
      rec.note("a third client after both left");
      const third = await rec.open("third", vm);
      await third.execute("query-status");
      await third.close();
    },
  },
  {
    name: "status",
    description:
      "Run states and their events: query-version, query-status in prelaunch (-S), running, paused and inmigrate (-incoming defer), stop and cont (twice each), STOP/RESUME, query-commands, quit.",
    async run(rec, fw) {
      const vm = await rec.start("vm", { firmware: fw.idle, paused: true });
      const qmp = await rec.open("vm", vm);
      await qmp.execute("query-version");
      await qmp.execute("query-status");
      await qmp.execute("cont");
      await qmp.execute("query-status");
      await qmp.execute("cont");
      await qmp.execute("stop");
      await qmp.execute("query-status");
      await qmp.execute("stop");
      await qmp.execute("cont");
      await qmp.execute("query-commands");
      await qmp.execute("human-monitor-command", {
        "command-line": "info status",
      });
      rec.note("quit ends QEMU; the connection closes after the reply");
      await qmp.execute("quit");
      await qmp.waitForEvent("SHUTDOWN");
      await vm.qemu.exited;
      await delay(200);
      const dst = await rec.start("dst", {
        firmware: fw.idle,
        paused: false,
        incoming: "defer",
      });
      const incoming = await rec.open("dst", dst);
      await incoming.execute("query-status");
      await incoming.execute("query-migrate");
      await incoming.execute("stop");
      await incoming.execute("query-status");
      await incoming.execute("cont");
      await incoming.execute("query-status");
      await incoming.execute("human-monitor-command", {
        "command-line": "info status",
      });
    },
  },
  {
    name: "capabilities",
    description:
      "query-migrate-capabilities (QEMU 7.2's 21 in its order), info migrate_capabilities, and every check of migrate-set-capabilities: unknown names, combinations refused by migrate_caps_check, postcopy-ram on an incoming guest, duplicates.",
    async run(rec, fw) {
      const vm = await rec.start("vm", { firmware: fw.idle, paused: true });
      const qmp = await rec.open("vm", vm);
      await qmp.execute("query-migrate-capabilities");
      await qmp.execute("human-monitor-command", {
        "command-line": "info migrate_capabilities",
      });
      const cases: Record<string, boolean>[] = [
        { "warp-drive": true },
        { "xbzrle": true, "warp-drive": true },
        { "mapped-ram": true },
        { "postcopy-preempt": true },
        { "postcopy-preempt": true, "compress": true },
        { "postcopy-ram": true, "postcopy-preempt": true, "compress": true },
        { "multifd": true, "compress": true },
        { "postcopy-ram": true, "postcopy-preempt": true, "multifd": true },
        { "postcopy-ram": false, "postcopy-preempt": false, "multifd": false },
        { "background-snapshot": true, "xbzrle": true, "postcopy-ram": true },
        { "zero-copy-send": true },
        { "zero-copy-send": true, "multifd": true, "xbzrle": true },
        { "zero-copy-send": true, "multifd": true, "compress": true },
        { "postcopy-ram": true, "x-ignore-shared": true },
        { "background-snapshot": true },
        { "background-snapshot": false },
        { "block": true },
        { "block": false },
        { "x-colo": true },
        { "x-colo": false },
        { "xbzrle": true, "events": true },
        { "xbzrle": false, "events": false },
        { "xbzrle": true },
      ];
      for (const states of cases) {
        await qmp.execute("migrate-set-capabilities", caps(states));
      }
      await qmp.execute("migrate-set-capabilities", caps({ "xbzrle": false }));
      rec.note("background-snapshot against every other capability");
      for (
        const other of [
          "xbzrle",
          "rdma-pin-all",
          "auto-converge",
          "zero-blocks",
          "compress",
          "events",
          "postcopy-ram",
          "x-colo",
          "release-ram",
          "block",
          "return-path",
          "pause-before-switchover",
          "multifd",
          "dirty-bitmaps",
          "postcopy-blocktime",
          "late-block-activate",
          "x-ignore-shared",
          "validate-uuid",
          "zero-copy-send",
          "postcopy-preempt",
        ]
      ) {
        const result = await qmp.execute(
          "migrate-set-capabilities",
          caps({ "background-snapshot": true, [other]: true }),
        );
        if (!(result instanceof Object && "error" in result)) {
          await qmp.execute(
            "migrate-set-capabilities",
            caps({ "background-snapshot": false, [other]: false }),
          );
        }
      }
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "background-snapshot": false }),
      );
      rec.note("the last entry for a capability wins");
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "events", state: true },
          { capability: "events", state: false },
        ],
      });
      await qmp.execute("query-migrate-capabilities");
      rec.note("a refused change leaves every capability as it was");
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "return-path": true, "postcopy-preempt": true }),
      );
      await qmp.execute("query-migrate-capabilities");
      rec.note("checks against capabilities already on");
      await qmp.execute("migrate-set-capabilities", caps({ "multifd": true }));
      await qmp.execute("migrate-set-capabilities", caps({ "compress": true }));
      await qmp.execute("migrate-set-capabilities", caps({ "multifd": false }));
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-ram": true }),
      );
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-preempt": true }),
      );
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "compress": false }),
      );
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-preempt": true }),
      );
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-ram": false }),
      );
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "zero-copy-send": true }),
      );
      await qmp.execute("migrate-set-parameters", {
        "multifd-compression": "zlib",
      });
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "multifd": true, "zero-copy-send": true }),
      );
      await qmp.execute("migrate-set-parameters", {
        "multifd-compression": "none",
      });
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "multifd": true, "zero-copy-send": true }),
      );
      await qmp.execute("migrate-set-parameters", {
        "multifd-compression": "zlib",
      });
      await qmp.execute("migrate-set-parameters", { "tls-creds": "x" });
      await qmp.execute("query-migrate-capabilities");
      await qmp.execute("human-monitor-command", {
        "command-line": "info migrate_capabilities",
      });
      const dst = await rec.start("dst", {
        firmware: fw.idle,
        paused: false,
        incoming: "defer",
      });
      const incoming = await rec.open("dst", dst);
      rec.note("an incoming guest checks the host for postcopy support");
      await incoming.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-ram": true }),
      );
      await incoming.execute(
        "migrate-set-capabilities",
        caps({ "multifd": true }),
      );
      await incoming.execute("query-migrate-capabilities");
    },
  },
  {
    name: "parameters",
    description:
      "query-migrate-parameters (keys and QEMU 7.2 defaults), info migrate_parameters, and every range check of migrate_params_check with its desc, plus the argument visitor's type errors and unknown parameters.",
    async run(rec, fw) {
      const vm = await rec.start("vm", { firmware: fw.idle, paused: true });
      const qmp = await rec.open("vm", vm);
      await qmp.execute("query-migrate-parameters");
      await qmp.execute("human-monitor-command", {
        "command-line": "info migrate_parameters",
      });
      rec.note("range checks, in migrate_params_check's order");
      const cases: Record<string, unknown>[] = [
        { "compress-level": 10 },
        { "compress-level": 9 },
        { "compress-threads": 0 },
        { "compress-threads": 255 },
        { "decompress-threads": 0 },
        { "throttle-trigger-threshold": 0 },
        { "throttle-trigger-threshold": 101 },
        { "cpu-throttle-initial": 0 },
        { "cpu-throttle-initial": 100 },
        { "cpu-throttle-increment": 0 },
        { "cpu-throttle-increment": 100 },
        { "downtime-limit": 2000001 },
        { "downtime-limit": 3000000 },
        { "downtime-limit": 2000000 },
        { "downtime-limit": 0 },
        { "multifd-channels": 0 },
        { "multifd-zlib-level": 10 },
        { "multifd-zstd-level": 21 },
        { "xbzrle-cache-size": 1000 },
        { "xbzrle-cache-size": 12288 },
        { "xbzrle-cache-size": 0 },
        { "xbzrle-cache-size": 4096 },
        { "max-cpu-throttle": 100 },
        { "max-cpu-throttle": 10 },
        { "cpu-throttle-initial": 50, "max-cpu-throttle": 40 },
        { "announce-initial": 100001 },
        { "announce-max": 100001 },
        { "announce-rounds": 1001 },
        { "announce-step": 0 },
        { "announce-step": 10001 },
        {
          "block-bitmap-mapping": [{
            "node-name": "x",
            "alias": "y",
            "bitmaps": [],
          }],
        },
        { "block-bitmap-mapping": [] },
        { "compress-level": 10, "downtime-limit": 3000000 },
        { "downtime-limit": 3000000, "xbzrle-cache-size": 1000 },
        { "max-bandwidth": 0 },
        { "max-bandwidth": -1 },
        { "downtime-limit": -1 },
        { "max-postcopy-bandwidth": 1 },
        { "x-checkpoint-delay": 0 },
        { "x-checkpoint-delay": -1 },
        { "multifd-compression": "zstd" },
        { "multifd-compression": "lz4" },
        { "tls-creds": null },
        { "tls-creds": "" },
        { "tls-hostname": "host" },
        { "tls-authz": "authz" },
        { "block-incremental": true },
        { "compress-wait-thread": false },
        { "cpu-throttle-tailslow": true },
      ];
      for (const args of cases) {
        await qmp.execute("migrate-set-parameters", args);
      }
      await qmp.execute("query-migrate-parameters");
      rec.note(
        "multifd-zlib-level and multifd-zstd-level are accepted and not applied",
      );
      await qmp.execute("migrate-set-parameters", {
        "multifd-zlib-level": 5,
        "multifd-zstd-level": 7,
      });
      await qmp.execute("query-migrate-parameters");
      await qmp.execute("human-monitor-command", {
        "command-line": "info migrate_parameters",
      });
      rec.note("types and unknown parameters");
      for (
        const text of [
          '{"execute": "migrate-set-parameters", "arguments": {"warp": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"mode": "normal"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"avail-switchover-bandwidth": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime_limit": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": "x"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 1.0}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": true}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": null}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 18446744073709551615}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": 18446744073709551616}}',
          '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": "1M"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1.5}}',
          '{"execute": "migrate-set-parameters", "arguments": {"xbzrle-cache-size": "x"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-level": 256}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-level": -1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-level": "x"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"cpu-throttle-initial": -1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"multifd-channels": 256}}',
          '{"execute": "migrate-set-parameters", "arguments": {"x-checkpoint-delay": 4294967296}}',
          '{"execute": "migrate-set-parameters", "arguments": {"announce-rounds": -1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-wait-thread": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"tls-creds": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"tls-creds": []}}',
          '{"execute": "migrate-set-parameters", "arguments": {"multifd-compression": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"block-bitmap-mapping": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"block-bitmap-mapping": [{}]}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-level": 10, "warp": 1}}',
          '{"execute": "migrate-set-parameters", "arguments": {"warp": 1, "compress-level": "x"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"downtime-limit": "x", "compress-level": "x"}}',
          '{"execute": "migrate-set-parameters", "arguments": {"compress-level": "x", "downtime-limit": "x"}}',
          '{"execute": "migrate-set-parameters"}',
          '{"execute": "migrate-set-parameters", "arguments": {}}',
        ]
      ) {
        await qmp.send(line(text));
      }
      rec.note("the width of every integer parameter: -1, then 2^32");
      for (
        const name of [
          "announce-initial",
          "announce-max",
          "announce-rounds",
          "announce-step",
          "compress-level",
          "compress-threads",
          "decompress-threads",
          "throttle-trigger-threshold",
          "cpu-throttle-initial",
          "cpu-throttle-increment",
          "max-bandwidth",
          "downtime-limit",
          "x-checkpoint-delay",
          "multifd-channels",
          "xbzrle-cache-size",
          "max-postcopy-bandwidth",
          "max-cpu-throttle",
          "multifd-zlib-level",
          "multifd-zstd-level",
        ]
      ) {
        await qmp.execute("migrate-set-parameters", { [name]: -1 });
        await qmp.execute("migrate-set-parameters", { [name]: 4294967296 });
      }
      await qmp.execute("query-migrate-parameters");
    },
  },
  {
    name: "commands",
    description:
      "Migration commands outside a migration: migrate with a bad URI, a closed port, file:, detach, resume; migrate-incoming without -incoming defer and twice; migrate_cancel, migrate-continue, migrate-pause, migrate-recover, migrate-start-postcopy with nothing to act on; calc-dirty-rate / query-dirty-rate; query-migrate and info migrate before and after a failure.",
    async run(rec, fw) {
      const vm = await rec.start("src", { firmware: fw.idle, paused: false });
      const qmp = await rec.open("src", vm);
      await qmp.execute("query-migrate");
      await qmp.execute("human-monitor-command", INFO_MIGRATE);
      await qmp.execute("migrate-set-capabilities", caps({ events: true }));
      await qmp.execute("human-monitor-command", INFO_MIGRATE);
      await qmp.execute("migrate_cancel");
      await qmp.execute("migrate-continue", { state: "pre-switchover" });
      await qmp.execute("migrate-continue", { state: "active" });
      await qmp.execute("migrate-pause");
      await qmp.execute("migrate-recover", { uri: "tcp:127.0.0.1:1" });
      await qmp.execute("migrate-start-postcopy");
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-ram": true }),
      );
      await qmp.execute("migrate-start-postcopy");
      await qmp.execute(
        "migrate-set-capabilities",
        caps({ "postcopy-ram": false }),
      );
      await qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
      await qmp.execute("migrate", { uri: "tcp:127.0.0.1:1", resume: true });
      rec.note("a URI QEMU does not know");
      for (
        const uri of [
          "bogus:foo",
          "file:/tmp/livemig-nowhere",
          "",
          "tcp:",
          "tcp:127.0.0.1",
          "unix:",
        ]
      ) {
        await qmp.execute("migrate", { uri });
        await qmp.pollMigrate(() => true);
        await qmp.execute("query-migrate");
      }
      await qmp.execute("human-monitor-command", INFO_MIGRATE);
      rec.note("a closed port");
      qmp.forgetEvents();
      await qmp.execute("migrate", { uri: "tcp:127.0.0.1:1" });
      await qmp.waitForEvent(
        "MIGRATION",
        (d) => (d as { status: string }).status === "failed",
      );
      await qmp.execute("query-migrate");
      await qmp.execute("human-monitor-command", INFO_MIGRATE);
      rec.note("detach is accepted and ignored");
      await qmp.execute("migrate", { uri: "tcp:127.0.0.1:1", detach: true });
      await qmp.waitForEvent(
        "MIGRATION",
        (d) => (d as { status: string }).status === "failed",
      );
      await qmp.execute("migrate", { uri: "tcp:127.0.0.1:1", detach: false });
      await qmp.waitForEvent(
        "MIGRATION",
        (d) => (d as { status: string }).status === "failed",
      );
      await qmp.execute("migrate", { uri: "unix:/tmp/livemig-no-such-socket" });
      await qmp.waitForEvent(
        "MIGRATION",
        (d) => (d as { status: string }).status === "failed",
      );
      await qmp.execute("query-migrate");
      await qmp.execute("migrate_cancel");
      await qmp.execute("query-migrate");
      await qmp.execute("migrate-continue", { state: "failed" });
      rec.note(
        "dirty rate (page-sampling only: modes dirty-bitmap and dirty-ring end QEMU 7.2 with SIGSEGV under TCG)",
      );
      await qmp.execute("query-dirty-rate");
      await qmp.execute("calculate-dirty-rate", { "calc-time": 1 });
      await qmp.execute("calc-dirty-rate", { "calc-time": 0 });
      await qmp.execute("calc-dirty-rate", { "calc-time": 61 });
      await qmp.execute("calc-dirty-rate", {
        "calc-time": 1,
        "sample-pages": 1,
      });
      await qmp.execute("calc-dirty-rate", {
        "calc-time": 1,
        "sample-pages": 100000,
      });
      await qmp.execute("calc-dirty-rate", { "calc-time": 1 });
      await qmp.execute("query-dirty-rate");
      await qmp.execute("calc-dirty-rate", { "calc-time": 1 });
      await delay(1500);
      await qmp.execute("query-dirty-rate");
      rec.note("the incoming side");
      const dst = await rec.start("dst", {
        firmware: fw.idle,
        paused: false,
        incoming: "defer",
      });
      const incoming = await rec.open("dst", dst);
      await incoming.execute("query-migrate");
      await incoming.execute("human-monitor-command", INFO_MIGRATE);
      await incoming.execute("migrate-recover", { uri: "tcp:127.0.0.1:0" });
      await incoming.execute("migrate-pause");
      await incoming.execute("migrate", { uri: "tcp:127.0.0.1:1" });
      await incoming.execute("migrate-incoming", { uri: "bogus:foo" });
      await incoming.execute("query-migrate");
      await incoming.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
      await incoming.execute("query-migrate");
      await incoming.execute("human-monitor-command", INFO_MIGRATE);
      await incoming.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
      await incoming.execute(
        "migrate-set-capabilities",
        caps({ events: true }),
      );
      await incoming.execute("migrate_cancel");
      await incoming.execute("query-migrate");
    },
  },
  {
    name: "precopy",
    description:
      "An idle guest migrated over tcp to a -incoming defer destination with the events capability on both ends: MIGRATION, MIGRATION_PASS, STOP, RESUME on each side, query-migrate and info migrate before and after, run states after (postmigrate / running), what the source refuses afterwards.",
    async run(rec, fw) {
      const src = await rec.start("src", { firmware: fw.idle, paused: false });
      const dst = await rec.start("dst", {
        firmware: fw.idle,
        paused: false,
        incoming: "defer",
      });
      const s = await rec.open("src", src);
      const d = await rec.open("dst", dst);
      await d.execute("query-status");
      await d.execute("migrate-set-capabilities", caps({ events: true }));
      await d.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
      const port = await incomingPort(d);
      await d.execute("query-migrate");
      await d.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await s.execute("migrate-set-capabilities", caps({ events: true }));
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await waitStatus(s, "completed");
      await waitStatus(d, "completed");
      await d.waitForEvent("RESUME");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await d.execute("query-migrate");
      await d.execute("human-monitor-command", INFO_MIGRATE);
      await d.execute("query-status");
      rec.note("after completion");
      await s.execute("migrate_cancel");
      await s.execute("query-migrate");
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await s.execute("migrate-continue", { state: "completed" });
      await d.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
      await s.execute("cont");
      await s.execute("query-status");
      await s.execute("stop");
      await s.execute("query-status");
    },
  },
  {
    name: "pause-before-switchover",
    description:
      "The precopy migration again with pause-before-switchover: the source stops in pre-switchover (query-migrate, info migrate, refused commands there), migrate-continue with the wrong and the right state, then device and completed.",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.idle, fw.idle);
      await s.execute(
        "migrate-set-capabilities",
        caps({ events: true, "pause-before-switchover": true }),
      );
      await s.execute("migrate-continue", { state: "pre-switchover" });
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await waitStatus(s, "pre-switchover");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await d.execute("query-migrate");
      await d.execute("human-monitor-command", INFO_MIGRATE);
      rec.note("refused while a migration runs");
      await s.execute("migrate-set-capabilities", caps({ xbzrle: true }));
      await s.execute("migrate-set-capabilities", caps({ events: true }));
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await s.execute("migrate-pause");
      await s.execute("migrate-start-postcopy");
      await s.execute("migrate-continue", { state: "active" });
      await s.execute("migrate-continue", { state: "device" });
      await s.execute("migrate-set-parameters", { "downtime-limit": 400 });
      await s.execute("query-migrate-parameters");
      await s.execute("migrate-continue", { state: "pre-switchover" });
      await waitStatus(s, "completed");
      await waitStatus(d, "completed");
      await d.waitForEvent("RESUME");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await d.execute("query-status");
    },
  },
  {
    name: "live-parameters",
    description:
      "A guest that keeps dirtying pages, with xbzrle on: downtime-limit 1 ms and max-bandwidth 1 MiB/s keep it in active; query-migrate and info migrate while active (xbzrle section); max-bandwidth changed during the migration; then downtime-limit 2000000 makes it complete at once.",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.dirty, fw.idle);
      await s.execute(
        "migrate-set-capabilities",
        caps({ events: true, xbzrle: true }),
      );
      await s.execute("migrate-set-parameters", {
        "downtime-limit": 1,
        "max-bandwidth": 1048576,
      });
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await s.waitForEvent(
        "MIGRATION_PASS",
        (data) => (data as { pass: number }).pass >= 4,
      );
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await d.execute("query-migrate");
      await d.execute("human-monitor-command", INFO_MIGRATE);
      await d.execute("query-status");
      rec.note("max-bandwidth during the migration");
      await s.execute("migrate-set-parameters", { "max-bandwidth": 2097152 });
      await s.execute("query-migrate-parameters");
      await s.execute("migrate-set-parameters", { "xbzrle-cache-size": 1000 });
      await s.execute("migrate-set-parameters", {
        "xbzrle-cache-size": 1048576,
      });
      await s.execute("query-migrate");
      rec.note("downtime-limit 2000000 lets it complete");
      await s.execute("migrate-set-parameters", { "downtime-limit": 2000000 });
      await waitStatus(s, "completed");
      await waitStatus(d, "completed");
      await d.waitForEvent("RESUME");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await d.execute("query-migrate");
    },
  },
  {
    name: "cancel-setup",
    description:
      "migrate and migrate_cancel in one write, so the cancel arrives while the source is still in setup; what the source reports and what the destination sees.",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.idle, fw.idle);
      await s.execute("migrate-set-capabilities", caps({ events: true }));
      await s.send(
        `{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.1:${port}"}}{"execute": "migrate_cancel"}{"execute": "query-migrate"}\n`,
        { replies: 3 },
      );
      await waitStatus(s, "cancelled");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await delay(500);
      if (!d.closed) {
        await d.execute("query-migrate");
        await d.execute("query-status");
      }
    },
  },
  {
    name: "cancel-active",
    description:
      "A guest that keeps dirtying pages, held in active by max-bandwidth 8 KiB/s (the first pass takes seconds) and downtime-limit 1 ms, cancelled 0.5 s into active: cancelling, cancelled; the guest keeps running; a second migrate_cancel; what the destination sees.",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.dirty, fw.idle);
      await s.execute("migrate-set-capabilities", caps({ events: true }));
      await s.execute("migrate-set-parameters", {
        "downtime-limit": 1,
        "max-bandwidth": 8192,
      });
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await waitStatus(s, "active");
      await delay(500);
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("migrate_cancel");
      await waitStatus(s, "cancelled");
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await s.execute("migrate_cancel");
      await s.execute("migrate-set-capabilities", caps({ xbzrle: true }));
      await delay(500);
      if (!d.closed) {
        await d.execute("query-migrate");
        await d.execute("query-status");
      }
    },
  },
  {
    name: "cancel-pre-switchover",
    description:
      "Cancelled while paused in pre-switchover (pause-before-switchover): the source restarts its guest (RESUME) and reports cancelled.",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.idle, fw.idle);
      await s.execute(
        "migrate-set-capabilities",
        caps({ events: true, "pause-before-switchover": true }),
      );
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await waitStatus(s, "pre-switchover");
      await s.execute("query-status");
      await s.execute("migrate_cancel");
      await waitStatus(s, "cancelled");
      await delay(200);
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      await s.execute("migrate-continue", { state: "pre-switchover" });
      await delay(500);
      if (!d.closed) {
        await d.execute("query-migrate");
        await d.execute("query-status");
      }
    },
  },
  {
    name: "cancel-device",
    description:
      "Cancel in device (the recording tries up to three times for a cancel that lands in device): a 128 MiB guest whose pages are all non-zero migrates to a TCP sink with pause-before-switchover; downtime-limit 2000000 sends it to pre-switchover after the first bandwidth window; the sink stops reading and migrate-continue starts the final pass, which blocks in device. QEMU 7.2 sends that pass holding its main lock, so migrate_cancel (and any command) waits until the sink reads again; it then lands in device or after completion, whichever comes first.",
    async run(rec, fw, lastAttempt) {
      const src = await rec.start("src", {
        firmware: fw.bigDirty,
        paused: false,
        ramMiB: 128,
      });
      const s = await rec.open("src", src);
      const sink = await rec.sink();
      rec.note("let the guest write every page once");
      await delay(1500);
      await s.execute(
        "migrate-set-capabilities",
        caps({ events: true, "pause-before-switchover": true }),
      );
      await s.execute("migrate-set-parameters", {
        "downtime-limit": 2000000,
        "max-bandwidth": 4194304,
      });
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${sink.port}` });
      await waitStatus(s, "pre-switchover");
      await s.execute("query-status");
      sink.pause();
      await s.execute("migrate-continue", { state: "pre-switchover" });
      await waitStatus(s, "device");
      rec.note(
        "migrate_cancel and query-migrate while the device phase is blocked on the socket",
      );
      await s.send(
        '{"execute": "migrate_cancel"}{"execute": "query-migrate"}\n',
        { replies: 2, wait: false },
      );
      const early = await s.collect(2, 3000);
      rec.note(
        `${early} of 2 replies within 3 s; the sink reads again`,
      );
      sink.resume();
      await s.collect(2 - early, REPLY_TIMEOUT_MS);
      const end = await s.waitForEvent(
        "MIGRATION",
        (data) =>
          ["cancelled", "completed", "failed"].includes(
            (data as { status: string }).status,
          ),
      ) as { status: string };
      if (end.status !== "cancelled" && !lastAttempt) {
        throw new Error(
          `the last pass finished before the cancel landed (${end.status}); trying for a cancel in device`,
        );
      }
      await delay(300);
      sink.resume();
      await s.execute("query-migrate");
      await s.execute("human-monitor-command", INFO_MIGRATE);
      await s.execute("query-status");
      sink.close();
    },
  },
  {
    name: "cancel-completed",
    description:
      "migrate_cancel after the migration completed: accepted, nothing changes (no event, status stays completed, the guest stays in postmigrate).",
    async run(rec, fw) {
      const { s, d, port } = await deferredPair(rec, fw.idle, fw.idle);
      await s.execute("migrate-set-capabilities", caps({ events: true }));
      await s.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      await waitStatus(s, "completed");
      await d.waitForEvent("RESUME");
      await s.execute("migrate_cancel");
      await delay(300);
      await s.execute("query-migrate");
      await s.execute("query-status");
      await d.execute("migrate_cancel");
      await d.execute("query-migrate");
    },
  },
];

/** Commands whose schema `schema.json` keeps. */
const SCHEMA_COMMANDS = [
  "qmp_capabilities",
  "query-version",
  "query-status",
  "stop",
  "cont",
  "quit",
  "query-commands",
  "migrate",
  "migrate-incoming",
  "migrate_cancel",
  "migrate-continue",
  "migrate-pause",
  "migrate-recover",
  "migrate-start-postcopy",
  "migrate-set-capabilities",
  "query-migrate-capabilities",
  "migrate-set-parameters",
  "query-migrate-parameters",
  "query-migrate",
  "calc-dirty-rate",
  "query-dirty-rate",
  "human-monitor-command",
];

/** Events whose schema `schema.json` keeps. */
const SCHEMA_EVENTS = [
  "MIGRATION",
  "MIGRATION_PASS",
  "STOP",
  "RESUME",
  "SHUTDOWN",
];

/**
 * The SchemaInfo entries of the commands and events livemig serves and
 * every type they reach, in QEMU's order.
 */
async function recordSchema(fw: Firmwares, version: string): Promise<unknown> {
  const work = await Deno.makeTempDir({ prefix: "livemig-qmp-schema-" });
  const rec = new Recording(work);
  try {
    const vm = await rec.start("vm", { firmware: fw.idle, paused: true });
    const qmp = await rec.open("vm", vm);
    const schema = await qmp.execute("query-qmp-schema", undefined, {
      record: false,
    }) as { name: string; "meta-type": string; [key: string]: unknown }[];
    const byName = new Map(schema.map((entry) => [entry.name, entry]));
    const wanted = new Set<string>();
    const visit = (name: string | undefined) => {
      if (name === undefined || wanted.has(name)) return;
      const entry = byName.get(name);
      if (entry === undefined) return;
      wanted.add(name);
      for (const key of ["arg-type", "ret-type", "element-type"]) {
        visit(entry[key] as string | undefined);
      }
      for (const member of (entry.members ?? []) as { type?: string }[]) {
        visit(member.type);
      }
      for (const variant of (entry.variants ?? []) as { type: string }[]) {
        visit(variant.type);
      }
    };
    for (const name of [...SCHEMA_COMMANDS, ...SCHEMA_EVENTS]) visit(name);
    const missing = [...SCHEMA_COMMANDS, ...SCHEMA_EVENTS].filter((name) =>
      !byName.has(name)
    );
    return {
      qemu: version,
      description:
        "The query-qmp-schema entries (QEMU's SchemaInfo) of the commands and events livemig's monitor serves, and every type they reach; QEMU names non-builtin types by number.",
      missing,
      schema: schema.filter((entry) => wanted.has(entry.name)),
    };
  } finally {
    await rec.dispose();
    await Deno.remove(work, { recursive: true });
  }
}

/** How often a scenario is tried before the tool gives up. */
const ATTEMPTS = 3;

/**
 * Runs a scenario, again when it fails: a guest that dirties pages may
 * still let QEMU complete a migration the script meant to keep running.
 */
async function recordScenario(
  scenario: Scenario,
  fw: Firmwares,
  version: string,
): Promise<unknown> {
  for (let attempt = 1;; attempt++) {
    try {
      return await runScenario(scenario, fw, version, attempt === ATTEMPTS);
    } catch (error) {
      if (attempt === ATTEMPTS) throw error;
      logError(`attempt ${attempt} of ${ATTEMPTS} failed: ${error}`);
    }
  }
}

async function runScenario(
  scenario: Scenario,
  fw: Firmwares,
  version: string,
  lastAttempt: boolean,
): Promise<unknown> {
  const work = await Deno.makeTempDir({ prefix: "livemig-qmp-" });
  const rec = new Recording(work);
  try {
    await scenario.run(rec, fw, lastAttempt);
    await delay(200);
  } catch (error) {
    logError(`"${scenario.name}" failed; its transcript ended with:`);
    for (const entry of rec.transcript.slice(-12)) {
      logError(`  ${JSON.stringify(entry).slice(0, 300)}`);
    }
    throw error;
  } finally {
    await rec.dispose();
    await Deno.remove(work, { recursive: true });
  }
  const vms: Record<string, { args: readonly string[] }> = {};
  for (const [name, vm] of rec.vms) vms[name] = { args: vm.args };
  return {
    qemu: version,
    description: scenario.description,
    vms,
    transcript: rec.transcript,
  };
}

/**
 * Formats a fixture: one transcript entry per line, so a diff shows which
 * exchange changed.
 */
function formatFixture(value: Record<string, unknown>): string {
  const lines: string[] = ["{"];
  const keys = Object.keys(value);
  keys.forEach((key, index) => {
    const comma = index === keys.length - 1 ? "" : ",";
    const item = value[key];
    if (Array.isArray(item) && (key === "transcript" || key === "schema")) {
      lines.push(`  ${JSON.stringify(key)}: [`);
      item.forEach((entry, i) => {
        lines.push(
          `    ${JSON.stringify(entry)}${i === item.length - 1 ? "" : ","}`,
        );
      });
      lines.push(`  ]${comma}`);
    } else {
      lines.push(`  ${JSON.stringify(key)}: ${JSON.stringify(item)}${comma}`);
    }
  });
  lines.push("}");
  return lines.join("\n") + "\n";
}

/**
 * Runs the tool.
 *
 * @param args Scenario names (and/or `schema`) to record; all when empty.
 * @returns The process exit code.
 */
export async function main(args: string[]): Promise<number> {
  const known = [...SCENARIOS.map((s) => s.name), "schema"];
  const unknown = args.filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    logError(
      `Cannot record unknown scenario(s) ${
        unknown.map((name) => `"${name}"`).join(", ")
      }: known are ${known.join(", ")}`,
    );
    return 2;
  }
  const skip = qemuSkipReason();
  if (skip !== undefined) {
    logError(
      `Cannot record QMP fixtures: ${skip}. Install QEMU 7.2 and nasm ` +
        `(Debian: apt-get install qemu-system-x86 nasm); this tool installs nothing.`,
    );
    return 1;
  }
  const version = await qemuVersion();
  if (!/ version 7\.2\./.test(version)) {
    logError(`Cannot record QMP fixtures with "${version}": they pin QEMU 7.2`);
    return 1;
  }
  log(`Using ${version}`);
  const build = await Deno.makeTempDir({ prefix: "livemig-qmp-fw-" });
  try {
    const fw: Firmwares = {
      idle: await buildFirmware(IDLE_FIRMWARE, await dir(build, "idle")),
      dirty: await buildFirmware(DIRTY_FIRMWARE, await dir(build, "dirty")),
      bigDirty: await buildFirmware(
        BIG_DIRTY_FIRMWARE,
        await dir(build, "big"),
      ),
    };
    await Deno.mkdir(OUTPUT, { recursive: true });
    for (const scenario of SCENARIOS) {
      if (args.length > 0 && !args.includes(scenario.name)) continue;
      log(`\n== ${scenario.name}`);
      const fixture = await recordScenario(scenario, fw, version);
      await Deno.writeTextFile(
        new URL(`${scenario.name}.json`, OUTPUT),
        formatFixture(fixture as Record<string, unknown>),
      );
    }
    if (args.length === 0 || args.includes("schema")) {
      log("\n== schema");
      const schema = await recordSchema(fw, version);
      await Deno.writeTextFile(
        new URL("schema.json", OUTPUT),
        formatFixture(schema as Record<string, unknown>),
      );
    }
  } finally {
    await Deno.remove(build, { recursive: true });
  }
  log("\nDone");
  return 0;
}

async function dir(parent: string, name: string): Promise<string> {
  const path = `${parent}/${name}`;
  await Deno.mkdir(path);
  return path;
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
