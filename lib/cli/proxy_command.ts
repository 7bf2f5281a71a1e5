import {
  connectTransport,
  listenTransport,
  MigrationProxy,
  type MigrationProxyInfo,
  sampleOfProxyInfo,
  type Transport,
  type TransportListener,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { describeCliError } from "./describe_cli_error.ts";
import { formatProxySummary } from "./format_proxy_summary.ts";
import { parseIdleTimeout } from "./parse_idle_timeout.ts";
import { onInterrupt } from "./on_interrupt.ts";
import {
  type MigrationSettings,
  parseMigrationSettings,
} from "./parse_migration_settings.ts";
import { startReport } from "./start_report.ts";
import { asUsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig proxy LISTEN_URI TARGET_URI [options]

Waits for a migration at LISTEN_URI (tcp:HOST:PORT or unix:PATH), then
connects to the destination at TARGET_URI (QEMU started with -incoming, or
livemig incoming) and forwards the stream, re-encoding every RAM record with
livemig's own stages: zero-page detection, XBZRLE on or off whatever the
source used, CONTINUE, and a bandwidth limit. Header, commands and device
state pass through unchanged; the return path is relayed back to the source.

Options:
  -c, --capability xbzrle=on|off
                       Send pages re-sent after the first round as XBZRLE
                       deltas (default off)
  -p, --parameter NAME=VALUE
                       max-bandwidth=RATE (default: no limit), e.g. 10MiB/s;
                       max-postcopy-bandwidth=RATE for the background copy
                       once the source starts postcopy (default: no limit);
                       xbzrle-cache-size=SIZE (default 64MiB)
  --idle-timeout DURATION
                       Fail when the source sends nothing for DURATION,
                       e.g. 30s (default: wait forever, as QEMU does)
  --json               Print the final statistics as one JSON object, the
                       last line
  --report FILE.svg    Write a picture of the migration through the proxy:
                       bandwidth and rounds over time, statuses
  -h, --help           Show this help

Exit status: 0 completed, 1 failed, 2 usage error.
`;

/** The parameters that change what the proxy sends. */
const PROXY_PARAMETERS = [
  "max-bandwidth",
  "xbzrle-cache-size",
  "max-postcopy-bandwidth",
];

/**
 * `livemig proxy LISTEN_URI TARGET_URI`: forwards a migration from a
 * source to a destination, re-encoding its RAM; Ctrl-C aborts it.
 *
 * @example Usage
 * ```ts
 * import { PROXY_COMMAND } from "./proxy_command.ts";
 * import { UsageError } from "./usage_error.ts";
 * import assert from "node:assert/strict";
 *
 * const io = { writeOut: () => {}, writeErr: () => {}, errIsTerminal: false };
 * await assert.rejects(
 *   PROXY_COMMAND.run(["tcp:127.0.0.1:0", "tcp:127.0.0.1:1", "-c", "postcopy-ram=on"], io),
 *   UsageError,
 * );
 * ```
 */
export const PROXY_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    capability: { type: "string", short: "c", multiple: true },
    parameter: { type: "string", short: "p", multiple: true },
    "idle-timeout": { type: "string" },
    json: { type: "boolean" },
    report: { type: "string" },
  },
  positionals: [
    { name: "LISTEN_URI", uri: true },
    { name: "TARGET_URI", uri: true },
  ],
  wrongCount: (count) =>
    `proxy takes LISTEN_URI and TARGET_URI: received ${count} arguments`,
  async run({ flags, positionals: [listenUri, targetUri] }, io) {
    const settings = asUsageError(
      USAGE,
      () => proxySettings(flags.capability, flags.parameter),
    );
    const idleTimeoutMs = parseIdleTimeout(flags["idle-timeout"], USAGE);
    const proxy = new MigrationProxy(settings);
    proxy.listen();
    const listener = await listenTransport(listenUri, {
      idleTimeoutMs,
      spareConnections: 0, // a second source is refused at once
      onRefused: (peer) =>
        io.writeErr(`livemig: refused a connection from ${peer}\n`),
    });
    io.writeErr(
      `livemig: waiting for a migration at ${listener.address}, forwarding to ${targetUri}\n`,
    );
    try {
      return await onInterrupt(
        () => proxy.abort("interrupted"),
        forward(proxy, {
          listener,
          targetUri,
          io,
          json: flags.json ?? false,
          report: flags.report,
        }),
      );
    } finally {
      await listener.close();
    }
  },
});

/** Reads `-c` and `-p`, refusing what does not change what it sends. */
function proxySettings(
  capabilityFlags: string[] | undefined,
  parameterFlags: string[] | undefined,
): MigrationSettings {
  const { capabilities, parameters } = parseMigrationSettings(
    capabilityFlags,
    parameterFlags,
  );
  for (const name of Object.keys(capabilities)) {
    if (name !== "xbzrle") {
      throw new TypeError(
        `Cannot set capability "${name}" on the proxy: only xbzrle changes what it sends`,
      );
    }
  }
  for (const name of Object.keys(parameters)) {
    if (!PROXY_PARAMETERS.includes(name)) {
      throw new TypeError(
        `Cannot set parameter "${name}" on the proxy: only max-bandwidth, max-postcopy-bandwidth and xbzrle-cache-size apply`,
      );
    }
  }
  return { capabilities, parameters };
}

/** Accepts the source, connects to the target, forwards; prints the end. */
async function forward(
  proxy: MigrationProxy,
  options: {
    listener: TransportListener;
    targetUri: string;
    io: CliIo;
    json: boolean;
    report: string | undefined;
  },
): Promise<number> {
  const { io, json } = options;
  let report: ((end: MigrationProxyInfo) => Promise<void>) | undefined;
  try {
    const source = await options.listener.accept();
    if (options.report !== undefined) {
      report = startProxyReport(proxy, options.report, {
        title: `livemig proxy to ${options.targetUri}`,
        io,
      });
    }
    let destination: Transport;
    try {
      destination = await connectTransport(options.targetUri);
    } catch (error) {
      await source.close();
      throw error;
    }
    const info = await proxy.run(source, destination);
    await report?.(info);
    io.writeOut(json ? JSON.stringify(info) + "\n" : formatProxySummary(info));
    return 0;
  } catch (error) {
    await report?.(proxy.query());
    if (json) {
      const info = proxy.query();
      io.writeOut(
        JSON.stringify(
          info.status === "failed" ? info : {
            ...info,
            status: "failed",
            "error-desc": describeCliError(error),
          },
        ) + "\n",
      );
    }
    io.writeErr(`livemig: ${describeCliError(error)}\n`);
    return 1;
  }
}

/** `--report`: records the proxy, writes the SVG at the end. */
function startProxyReport(
  proxy: MigrationProxy,
  path: string,
  options: { title: string; io: CliIo },
): (end: MigrationProxyInfo) => Promise<void> {
  return startReport(proxy, {
    path,
    title: options.title,
    toSample: sampleOfProxyInfo,
    outcome: (end) => ({
      status: end.status,
      totalTimeMs: end["total-time"] ?? 0,
      ...(end.sent ? { transferredBytes: end.sent.transferred } : {}),
    }),
    io: options.io,
  });
}
