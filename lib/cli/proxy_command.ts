import {
  connectTransport,
  listenTransport,
  MigrationProxy,
  type MigrationProxyInfo,
  type ProxyMultifdOptions,
  sampleOfProxyInfo,
  type TlsOptions,
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
import { parseTlsFlags, TLS_FLAGS, type TlsFlagValues } from "./tls_flags.ts";
import { checkWorkerPermission } from "./check_worker_permission.ts";

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
                       deltas (default off); multifd=on sends the pages on
                       multifd-channels more connections to TARGET_URI
  -p, --parameter NAME=VALUE
                       max-bandwidth=RATE (default: no limit), e.g. 10MiB/s;
                       max-postcopy-bandwidth=RATE for the background copy
                       once the source starts postcopy (default: no limit);
                       xbzrle-cache-size=SIZE (default 64MiB);
                       multifd-channels, multifd-compression,
                       multifd-zlib-level, multifd-zstd-level (with multifd)
  --source-multifd-channels N
                       The source migrates with multifd on N channels
                       (default: multifd off on the source's side)
  --source-multifd-compression none|zlib|zstd
                       The source's multifd-compression (default none)
  --idle-timeout DURATION
                       Fail when the source sends nothing for DURATION,
                       e.g. 30s (default: wait forever, as QEMU does)
  --tls-creds DIR      TLS on both sides: the proxy is the TLS server toward
                       the source and the client toward the target, with
                       the x509 files of DIR (QEMU's tls-creds-x509 layout:
                       server-* and client-* files both)
  --listen-tls-creds DIR, --target-tls-creds DIR
                       TLS on one side only (TLS terminated at the proxy)
  --tls-verify-peer on|off
                       Check the peer's certificate (default on, as QEMU)
  --tls-authz DN       Allow only sources with this certificate DN
                       (repeatable; @FILE reads one per line)
  --tls-hostname NAME  The name the target's certificate must carry
                       (default: the host of TARGET_URI)
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
  "multifd-channels",
  "multifd-compression",
  "multifd-zlib-level",
  "multifd-zstd-level",
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
    "source-multifd-channels": { type: "string" },
    "source-multifd-compression": { type: "string" },
    json: { type: "boolean" },
    report: { type: "string" },
    ...TLS_FLAGS,
    "listen-tls-creds": { type: "string" },
    "target-tls-creds": { type: "string" },
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
    const multifd = asUsageError(USAGE, () => proxyMultifd(flags, settings));
    if (multifd.source || multifd.destination) {
      checkWorkerPermission("multifd", USAGE);
    }
    const idleTimeoutMs = parseIdleTimeout(flags["idle-timeout"], USAGE);
    const { listenTls, targetTls } = await proxyTls(flags);
    const proxy = new MigrationProxy({ ...settings, multifd });
    proxy.listen();
    const listener = await listenTransport(listenUri, {
      idleTimeoutMs,
      // A second source is refused at once; multifd channels are taken.
      spareConnections: multifd.source?.channels ?? 0,
      ...(listenTls ? { tls: listenTls } : {}),
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
          ...(targetTls ? { tls: targetTls } : {}),
        }),
      );
    } finally {
      await listener.close();
    }
  },
});

/**
 * Reads the TLS flags of each side: `--tls-creds` for both, or
 * `--listen-tls-creds` / `--target-tls-creds` for one.
 */
async function proxyTls(
  flags: TlsFlagValues & {
    "listen-tls-creds"?: string | undefined;
    "target-tls-creds"?: string | undefined;
  },
): Promise<{ listenTls?: TlsOptions; targetTls?: TlsOptions }> {
  const both = flags["tls-creds"];
  const listenDir = flags["listen-tls-creds"] ?? both;
  const targetDir = flags["target-tls-creds"] ?? both;
  const verify = flags["tls-verify-peer"];
  const listenTls = await parseTlsFlags(
    {
      "tls-creds": listenDir,
      "tls-authz": flags["tls-authz"],
      "tls-verify-peer": listenDir === undefined ? undefined : verify,
    },
    "server",
    USAGE,
  );
  const targetTls = await parseTlsFlags(
    {
      "tls-creds": targetDir,
      "tls-hostname": flags["tls-hostname"],
      // Without TLS on either side, --tls-verify-peer is refused here.
      "tls-verify-peer": targetDir === undefined && listenDir !== undefined
        ? undefined
        : verify,
    },
    "client",
    USAGE,
  );
  return {
    ...(listenTls ? { listenTls } : {}),
    ...(targetTls ? { targetTls } : {}),
  };
}

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
    if (name !== "xbzrle" && name !== "multifd") {
      throw new TypeError(
        `Cannot set capability "${name}" on the proxy: only xbzrle and multifd change what it sends`,
      );
    }
  }
  for (const name of Object.keys(parameters)) {
    if (!PROXY_PARAMETERS.includes(name)) {
      throw new TypeError(
        `Cannot set parameter "${name}" on the proxy: only max-bandwidth, max-postcopy-bandwidth, xbzrle-cache-size and the multifd ones apply`,
      );
    }
  }
  return { capabilities, parameters };
}

/** The multifd settings of both sides: the source's flags, and -c/-p. */
function proxyMultifd(
  flags: {
    "source-multifd-channels"?: string | undefined;
    "source-multifd-compression"?: string | undefined;
  },
  settings: MigrationSettings,
): ProxyMultifdOptions {
  const multifd: ProxyMultifdOptions = {};
  const channels = flags["source-multifd-channels"];
  const compression = flags["source-multifd-compression"];
  if (channels !== undefined || compression !== undefined) {
    const { parameters } = parseMigrationSettings([], [
      `multifd-channels=${channels ?? 2}`,
      `multifd-compression=${compression ?? "none"}`,
    ]);
    multifd.source = {
      channels: parameters["multifd-channels"]!,
      compression: parameters["multifd-compression"]!,
    };
  }
  const { capabilities, parameters } = settings;
  if (capabilities.multifd) {
    multifd.destination = {
      channels: parameters["multifd-channels"] ?? 2,
      compression: parameters["multifd-compression"] ?? "none",
    };
  }
  return multifd;
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
    tls?: TlsOptions;
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
    // Every connection to the target (main, preempt, multifd channels)
    // runs over the target side's TLS, if any.
    const connect = () =>
      connectTransport(
        options.targetUri,
        options.tls ? { tls: options.tls } : {},
      );
    let destination: Transport;
    try {
      destination = await connect();
    } catch (error) {
      await source.close();
      throw error;
    }
    const info = await proxy.run(source, destination, {
      accept: () => options.listener.accept(),
      connect,
    });
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
