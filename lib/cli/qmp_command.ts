import { parseArgs } from "node:util";
import {
  formatQmpJson,
  parseQmpJson,
  QmpClient,
  QmpError,
  type QmpValue,
} from "../../mod.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { asUsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig qmp SOCKET COMMAND [JSON-ARGS]

Runs one QMP command on the monitor at SOCKET and prints what it returned:
a text (human-monitor-command) as it is, anything else as one line of JSON
the way QEMU writes it. Works with QEMU's monitor and livemig's alike.

  SOCKET      unix:PATH, tcp:HOST:PORT, or a path (a unix socket)
  COMMAND     e.g. query-migrate, migrate, migrate-set-parameters
  JSON-ARGS   the command's arguments as one JSON object, e.g.
              '{"uri": "tcp:127.0.0.1:4444"}'

Options:
  --timeout MS   How long to wait for the greeting and the reply
                 (default 60000)
  -h, --help     Show this help

Exit status: 0 the command succeeded, 1 it failed (the monitor's error is
printed on stderr) or the monitor could not be reached, 2 usage error.
`;

/**
 * `livemig qmp SOCKET COMMAND [JSON-ARGS]`: a one-shot QMP client.
 *
 * @example Usage
 * ```ts
 * import { QMP_COMMAND } from "./qmp_command.ts";
 * import { listenTransport, QmpServer } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const server = new QmpServer({ commands: { "query-name": { run: () => ({ name: "vm1" }) } } });
 * const listener = await listenTransport("tcp:127.0.0.1:0");
 * const serving = server.serve(listener);
 * let out = "";
 * let err = "";
 * const io = {
 *   writeOut: (text: string) => (out += text),
 *   writeErr: (text: string) => (err += text),
 *   errIsTerminal: false,
 * };
 * assert.equal(await QMP_COMMAND.run([listener.address, "query-name"], io), 0);
 * assert.equal(out, '{"name": "vm1"}\n');
 * assert.equal(await QMP_COMMAND.run([listener.address, "nope"], io), 1);
 * assert.equal(err, "livemig: nope: The command nope has not been found\n");
 * await server.close();
 * await serving;
 * ```
 */
export const QMP_COMMAND: Command = {
  usage: USAGE,
  run(args, io) {
    // JSON-ARGS may be left out; the command's own checks see it as {}.
    const { positionals } = parseArgs({
      args,
      options: { timeout: { type: "string" }, help: { type: "boolean" } },
      allowPositionals: true,
      strict: false,
    });
    return ONE_SHOT.run(positionals.length === 2 ? [...args, "{}"] : args, io);
  },
};

const ONE_SHOT: Command = defineCommand({
  usage: USAGE,
  flags: { timeout: { type: "string" } },
  positionals: [
    { name: "SOCKET" },
    { name: "COMMAND" },
    { name: "JSON-ARGS" },
  ],
  wrongCount: (count) =>
    count < 2
      ? "qmp needs a SOCKET and a COMMAND"
      : "qmp takes SOCKET COMMAND [JSON-ARGS]",
  async run({ flags, positionals: [socket, command, json] }, io) {
    const timeoutMs = asUsageError(
      USAGE,
      () => parseTimeout(flags.timeout ?? "60000"),
    );
    const args = asUsageError(USAGE, () => parseArguments(json));
    const address = /^(unix|tcp):/.test(socket) ? socket : `unix:${socket}`;
    const qmp = await QmpClient.connect(address, {
      timeoutMs,
      commandTimeoutMs: timeoutMs,
    });
    try {
      const value = await qmp.execute<QmpValue>(command, args);
      io.writeOut(
        typeof value === "string" ? value : `${formatQmpJson(value)}\n`,
      );
      return 0;
    } catch (error) {
      if (!(error instanceof QmpError)) throw error;
      io.writeErr(`livemig: ${command}: ${error.desc}\n`);
      return 1;
    } finally {
      await qmp.close();
    }
  },
});

function parseArguments(
  json: string,
): Readonly<Record<string, QmpValue>> | undefined {
  let value: QmpValue;
  try {
    value = parseQmpJson(json);
  } catch (error) {
    throw new TypeError(
      `Cannot parse JSON-ARGS ${JSON.stringify(json)}: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(
      `Cannot use JSON-ARGS ${JSON.stringify(json)}: it must be a JSON object`,
    );
  }
  const args = value as Readonly<Record<string, QmpValue>>;
  return Object.keys(args).length === 0 ? undefined : args;
}

function parseTimeout(text: string): number {
  const ms = Number(text);
  if (!Number.isSafeInteger(ms) || ms <= 0) {
    throw new RangeError(
      `Cannot use --timeout "${text}": it must be a positive number of milliseconds`,
    );
  }
  return ms;
}
