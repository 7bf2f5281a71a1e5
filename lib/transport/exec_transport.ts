import type { Transport } from "./transport.ts";
import { createSinkStream } from "./_byte_streams.ts";
import { describeError } from "../errors.ts";
import { ExecCommandError } from "./exec_command_error.ts";
import { TransportError } from "./transport_error.ts";
import { SYSTEM_CLOCK } from "../streams/clock.ts";

/** Options for {@linkcode spawnExecTransport}. */
export interface SpawnExecTransportOptions {
  /** Refuses to spawn when already aborted. */
  signal?: AbortSignal;
  /**
   * How many of the last bytes of the command's standard error to keep for
   * error messages.
   *
   * @default {2048}
   */
  stderrTailBytes?: number;
}

/**
 * Runs `command` as `/bin/sh -c command`, as QEMU's `exec:` URIs do, and
 * connects to it: `writable` feeds the command's standard input, `readable`
 * carries its standard output. An outgoing migration writes the stream to
 * the command (`exec:cat > vm.mig`, `exec:gzip -c > vm.mig.gz`), an incoming
 * one reads it from the command (`exec:cat vm.mig`); the other direction is
 * there as in QEMU, which opens the command read-write.
 *
 * When the command fails, the stream in use errors with an
 * {@linkcode ExecCommandError} giving the exit code and the end of its
 * standard error: `readable` when it reaches its end, `writable` on the
 * write that finds the pipe closed or on `close()`. Closing `writable` closes
 * the command's standard input and waits for the command to exit; `readable`
 * ends when the command's standard output does. `close()` kills a command
 * that is still running (SIGTERM) and returns once it exited, without
 * waiting for processes it started. Needs `--allow-run`.
 *
 * @example Usage
 * ```ts ignore
 * import { spawnExecTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const transport = spawnExecTransport("tr a-z A-Z");
 * const writer = transport.writable.getWriter();
 * await writer.write(new TextEncoder().encode("qevm"));
 * await writer.close();
 * const output = await new Response(transport.readable).text();
 * assert.equal(output, "QEVM");
 * await transport.close();
 * ```
 *
 * @param command The shell command.
 * @param options An abort signal and the stderr tail size.
 * @returns The transport; the command is already running.
 * @throws {TransportError} If the command cannot be started.
 */
export function spawnExecTransport(
  command: string,
  options: SpawnExecTransportOptions = {},
): Transport {
  const { signal, stderrTailBytes = 2048 } = options;
  signal?.throwIfAborted();
  return new ExecTransport(command, stderrTailBytes);
}

/** How long a failed write waits for the command's exit status. */
const EXIT_WAIT_MS = 1000;
/**
 * How long to wait, after the command exited, for the rest of its standard
 * error: a background process it started may keep the pipe open.
 */
const STDERR_WAIT_MS = 200;

class ExecTransport implements Transport {
  readonly description: string;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly #child: Deno.ChildProcess;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #stderr: StderrTail;
  readonly #stdout: ReadableStreamDefaultReader<Uint8Array>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  /** How the command ended, once it did. */
  #exitStatus: Deno.CommandStatus | undefined;
  #closed = false;
  #stdoutDone = false;
  #stdinDone = false;

  constructor(command: string, stderrTailBytes: number) {
    const uri = `exec:${command}`;
    this.description = uri;
    try {
      this.#child = new Deno.Command("/bin/sh", {
        args: ["-c", command],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (error) {
      throw new TransportError(
        `Cannot run "${uri}": ${describeError(error)}`,
        { uri, cause: error },
      );
    }
    this.#status = this.#child.status.then((status) => {
      this.#exitStatus = status;
      return status;
    });
    this.#stderr = new StderrTail(this.#child.stderr, stderrTailBytes);
    this.#stdout = this.#child.stdout.getReader();
    this.#stdin = this.#child.stdin.getWriter();
    this.readable = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        let result: ReadableStreamReadResult<Uint8Array>;
        try {
          result = await this.#stdout.read();
        } catch (error) {
          this.#stdoutDone = true;
          if (this.#closed) return controller.close();
          throw new TransportError(
            `Cannot read from "${uri}": ${describeError(error)}`,
            { uri, cause: error },
          );
        }
        if (!result.done) return controller.enqueue(result.value);
        this.#stdoutDone = true;
        const failure = await this.#failure();
        if (failure !== undefined) throw failure;
        controller.close();
      },
      cancel: async (reason) => {
        this.#stdoutDone = true;
        await this.#stdout.cancel(reason);
      },
    }, { highWaterMark: 0 });
    this.writable = createSinkStream({
      description: uri,
      write: async (bytes) => {
        await this.#stdin.write(bytes);
        return bytes.byteLength;
      },
      close: async () => {
        this.#stdinDone = true;
        await this.#stdin.close();
        await this.#status;
        const failure = await this.#failure();
        if (failure !== undefined) throw failure;
      },
      abort: () => {
        if (!this.#stdinDone) {
          this.#stdinDone = true;
          this.#stdin.abort().catch(() => {});
        }
      },
      isClosed: () => this.#closed,
      wrapError: (error) => this.#writeError(error),
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#exitStatus === undefined) {
      try {
        this.#child.kill("SIGTERM");
      } catch {
        // It exited in the meantime.
      }
    }
    if (!this.#stdoutDone) {
      this.#stdoutDone = true;
      await this.#stdout.cancel().catch(() => {});
    }
    if (!this.#stdinDone) {
      this.#stdinDone = true;
      await this.#stdin.abort().catch(() => {});
    }
    await this.#status;
    await this.#stderr.cancel();
  }

  /**
   * Why a write failed: the command's failure when it failed, or that it
   * exited before reading all of its input (a broken pipe says only the
   * second half of that); `undefined` gives the default error.
   */
  async #writeError(error: unknown): Promise<TransportError | undefined> {
    if (error instanceof ExecCommandError) return error;
    const failure = await this.#failure(EXIT_WAIT_MS);
    const status = this.#exitStatus;
    if (failure !== undefined || this.#closed || status === undefined) {
      return failure;
    }
    const uri = this.description;
    return new TransportError(
      `Cannot write to "${uri}": the command exited with code ${status.code} before reading all of its input: ${
        describeError(error)
      }`,
      { uri, cause: error },
    );
  }

  /**
   * The error for a failed command, `undefined` while it runs, after a
   * success, or after `close()` killed it. Waits up to `waitMs` (forever by
   * default) for the exit status.
   */
  async #failure(waitMs?: number): Promise<ExecCommandError | undefined> {
    let status: Deno.CommandStatus | undefined;
    if (waitMs === undefined) {
      status = await this.#status;
    } else {
      status = await within(this.#status, waitMs);
    }
    if (status === undefined || status.success || this.#closed) return;
    return new ExecCommandError({
      uri: this.description,
      exitCode: status.code,
      signal: status.signal,
      stderr: await this.#stderr.text(STDERR_WAIT_MS),
    });
  }
}

/** Keeps the last bytes a command writes to its standard error. */
class StderrTail {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #tailBytes: number;
  readonly #ended: Promise<void>;
  #tail = new Uint8Array(0);

  constructor(readable: ReadableStream<Uint8Array>, tailBytes: number) {
    this.#reader = readable.getReader();
    this.#tailBytes = tailBytes;
    this.#ended = this.#read();
  }

  /** The tail as text, once the pipe ended or after `waitMs`. */
  async text(waitMs: number): Promise<string> {
    await within(this.#ended, waitMs);
    return new TextDecoder().decode(this.#tail);
  }

  /** Stops reading and releases the pipe. */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#ended;
  }

  async #read(): Promise<void> {
    try {
      while (true) {
        const { done, value } = await this.#reader.read();
        if (done) return;
        const joined = new Uint8Array(this.#tail.byteLength + value.byteLength);
        joined.set(this.#tail);
        joined.set(value, this.#tail.byteLength);
        this.#tail = joined.slice(
          Math.max(0, joined.byteLength - this.#tailBytes),
        );
      }
    } catch {
      // Cancelled, or the pipe failed: keep what came.
    }
  }
}

/**
 * Settles like `promise` when it settles within `waitMs`; resolves to
 * `undefined` otherwise.
 */
async function within<T>(
  promise: Promise<T>,
  waitMs: number,
): Promise<T | undefined> {
  const stopWaiting = new AbortController();
  try {
    return await Promise.race([
      promise,
      SYSTEM_CLOCK.sleep(waitMs, stopWaiting.signal).then(
        () => undefined,
        () => undefined,
      ),
    ]);
  } finally {
    stopWaiting.abort();
  }
}
