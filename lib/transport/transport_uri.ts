/**
 * Migration URIs as QEMU's `migrate` and `migrate-incoming` commands take
 * them (qemu `migration/migration.c` `migrate_uri_parse()`,
 * `util/qemu-sockets.c` `inet_parse()`, `migration/file.c`
 * `file_parse_offset()`, `util/cutils.c` `qemu_strtosz()`):
 *
 * ```
 * tcp:HOST:PORT[,to=PORT][,ipv4[=on|off]][,ipv6[=on|off]][,keep-alive[=on|off]][,mptcp[=on|off]]
 *     HOST is a name, an IPv4 address, an IPv6 address in brackets, or empty
 * unix:PATH
 * exec:COMMAND          everything after the colon, run as /bin/sh -c COMMAND
 * file:PATH[,offset=SIZE]
 *     SIZE is decimal, optionally with a fraction, and an optional suffix
 *     B K M G T P E (powers of 1024, any case); or hexadecimal 0x… without
 *     suffix. A fraction needs a suffix other than B: 1.5M, not 1.5
 * vsock:CID:PORT, rdma:HOST:PORT, fd:NAME   recognised, not supported
 * ```
 *
 * Left out on purpose: QEMU also takes a bare `HOST:PORT` in some places and
 * the structured `channels` argument; livemig needs a scheme. Where QEMU
 * silently ignores an unknown `tcp:` option, livemig rejects it.
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";

/** A `tcp:` URI. */
export interface TcpTransportUri {
  /** The scheme. */
  scheme: "tcp";
  /**
   * Host name or address, without the brackets of an IPv6 address. Empty
   * means "any address" when listening and the local host when connecting.
   */
  host: string;
  /** Port, 0 to 65535; 0 when listening asks the system to pick one. */
  port: number;
  /** Last port to try when listening, if `port` is busy (QEMU's `to=`). */
  to?: number;
  /**
   * QEMU's `ipv4=` flag: use, or do not use, IPv4. Kept; livemig applies
   * only `ipv4=off`, and only to an empty host (`::1`/`::` instead of
   * `127.0.0.1`/`0.0.0.0`): named hosts resolve as the system resolves them.
   */
  ipv4?: boolean;
  /** QEMU's `ipv6=` flag: use, or do not use, IPv6. Kept, not applied. */
  ipv6?: boolean;
  /** QEMU's `keep-alive=` flag: send TCP keep-alive probes. */
  keepAlive?: boolean;
  /** QEMU's `mptcp=` flag: multipath TCP. Kept, but not applied. */
  mptcp?: boolean;
}

/** A `unix:` URI. */
export interface UnixTransportUri {
  /** The scheme. */
  scheme: "unix";
  /** File system path of the socket. */
  path: string;
}

/** An `exec:` URI. */
export interface ExecTransportUri {
  /** The scheme. */
  scheme: "exec";
  /** The shell command, run as `/bin/sh -c command`. */
  command: string;
}

/** A `file:` URI. */
export interface FileTransportUri {
  /** The scheme. */
  scheme: "file";
  /** File system path of the file. */
  path: string;
  /** Where the migration stream starts in the file, in bytes. */
  offset: number;
}

/** A parsed migration URI: one member per scheme livemig can open. */
export type TransportUri =
  | TcpTransportUri
  | UnixTransportUri
  | ExecTransportUri
  | FileTransportUri;

const UNSUPPORTED: Readonly<Record<string, string>> = {
  vsock: "vsock: transports are not supported",
  rdma: "rdma: transports are not supported (RDMA is not a byte stream)",
  fd: "fd: transports are not supported (no descriptor passing)",
};

const TCP_FLAGS = {
  "ipv4": "ipv4",
  "ipv6": "ipv6",
  "keep-alive": "keepAlive",
  "mptcp": "mptcp",
} as const;

const OFFSET_OPTION = ",offset=";

/**
 * Parses a migration URI.
 *
 * @example Usage
 * ```ts
 * import { parseTransportUri } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseTransportUri("tcp:[::1]:4444,to=4450"), {
 *   scheme: "tcp",
 *   host: "::1",
 *   port: 4444,
 *   to: 4450,
 * });
 * assert.deepEqual(parseTransportUri("file:/var/tmp/vm.mig,offset=1M"), {
 *   scheme: "file",
 *   path: "/var/tmp/vm.mig",
 *   offset: 1048576,
 * });
 * assert.throws(() => parseTransportUri("tcp:localhost"), {
 *   name: "TypeError",
 *   message: 'Cannot parse migration URI "tcp:localhost": a port is required',
 * });
 * ```
 *
 * @param uri The URI, such as `tcp:127.0.0.1:4444` or `exec:cat > vm.mig`.
 * @returns The parsed URI.
 * @throws {TypeError} If the URI is malformed or its scheme is unknown.
 * @throws {RangeError} If a port or offset is out of range.
 * @throws {NotSupportedError} For `vsock:`, `rdma:` and `fd:` URIs.
 */
export function parseTransportUri(uri: string): TransportUri {
  if (typeof uri !== "string") {
    throw new TypeError(
      `Cannot parse migration URI as it must be a string: received ${typeof uri}`,
    );
  }
  const colon = uri.indexOf(":");
  if (colon <= 0) {
    throw new TypeError(
      `Cannot parse migration URI "${uri}": expected SCHEME:ADDRESS with scheme tcp, unix, exec or file`,
    );
  }
  const scheme = uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
  switch (scheme) {
    case "tcp":
      return parseTcp(uri, rest);
    case "unix":
      if (rest === "") fail(uri, "a socket path is required");
      return { scheme, path: rest };
    case "exec":
      if (rest.trim() === "") fail(uri, "a command is required");
      return { scheme, command: rest };
    case "file":
      return parseFile(uri, rest);
  }
  const unsupported = UNSUPPORTED[scheme];
  if (unsupported !== undefined) {
    throw new NotSupportedError(
      `Cannot open migration URI "${uri}": ${unsupported}`,
    );
  }
  return fail(
    uri,
    `scheme "${scheme}" is unknown: expected tcp, unix, exec or file`,
  );
}

/**
 * Formats a parsed URI back into QEMU's syntax, so that
 * `parseTransportUri(formatTransportUri(uri))` equals `uri`.
 *
 * @example Usage
 * ```ts
 * import { formatTransportUri } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   formatTransportUri({ scheme: "tcp", host: "::1", port: 4444, ipv6: true }),
 *   "tcp:[::1]:4444,ipv6=on",
 * );
 * assert.equal(
 *   formatTransportUri({ scheme: "file", path: "vm.mig", offset: 0 }),
 *   "file:vm.mig",
 * );
 * ```
 *
 * @param uri The parsed URI.
 * @returns The URI as a string.
 * @throws {TypeError} If a part cannot be written in URI syntax.
 * @throws {RangeError} If a port or offset is out of range.
 */
export function formatTransportUri(uri: TransportUri): string {
  switch (uri.scheme) {
    case "tcp": {
      checkPort(uri.port, "port");
      if (uri.host.includes("]") || uri.host.includes(",")) {
        throw new TypeError(
          `Cannot format TCP host "${uri.host}": it contains "]" or ","`,
        );
      }
      const host = uri.host.includes(":") ? `[${uri.host}]` : uri.host;
      let text = `tcp:${host}:${uri.port}`;
      if (uri.to !== undefined) {
        checkPort(uri.to, "to");
        text += `,to=${uri.to}`;
      }
      for (const [name, key] of Object.entries(TCP_FLAGS)) {
        const value = uri[key];
        if (value !== undefined) text += `,${name}=${value ? "on" : "off"}`;
      }
      return text;
    }
    case "unix":
      if (uri.path === "") {
        throw new TypeError("Cannot format unix: URI: the path is empty");
      }
      return `unix:${uri.path}`;
    case "exec":
      if (uri.command.trim() === "") {
        throw new TypeError("Cannot format exec: URI: the command is empty");
      }
      return `exec:${uri.command}`;
    case "file": {
      if (uri.path === "" || uri.path.includes(OFFSET_OPTION)) {
        throw new TypeError(
          `Cannot format file: URI for path "${uri.path}": it is empty or contains "${OFFSET_OPTION}"`,
        );
      }
      if (!Number.isSafeInteger(uri.offset) || uri.offset < 0) {
        throw new RangeError(
          `Cannot format file: URI as offset must be a non-negative safe integer: received ${uri.offset}`,
        );
      }
      return uri.offset === 0
        ? `file:${uri.path}`
        : `file:${uri.path}${OFFSET_OPTION}${uri.offset}`;
    }
  }
}

function parseTcp(uri: string, rest: string): TcpTransportUri {
  let host: string;
  let afterHost: string;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) fail(uri, 'the IPv6 address has no closing "]"');
    host = rest.slice(1, close);
    if (host === "") fail(uri, "the IPv6 address is empty");
    afterHost = rest.slice(close + 1);
    if (!afterHost.startsWith(":")) fail(uri, "a port is required");
  } else {
    const colon = rest.indexOf(":");
    if (colon < 0) fail(uri, "a port is required");
    host = rest.slice(0, colon);
    afterHost = rest.slice(colon);
  }
  const comma = afterHost.indexOf(",");
  const portText = afterHost.slice(1, comma < 0 ? undefined : comma);
  if (portText.includes(":")) {
    fail(uri, "an IPv6 address must be in brackets, as in tcp:[::1]:4444");
  }
  const result: TcpTransportUri = {
    scheme: "tcp",
    host,
    port: parsePort(uri, portText, "port"),
  };
  if (comma < 0) return result;
  for (const option of afterHost.slice(comma + 1).split(",")) {
    const equals = option.indexOf("=");
    const name = equals < 0 ? option : option.slice(0, equals);
    const value = equals < 0 ? undefined : option.slice(equals + 1);
    if (name === "to") {
      if (value === undefined) fail(uri, 'option "to" needs a port');
      const to = parsePort(uri, value, "to");
      if (to < result.port) {
        throw new RangeError(
          `Cannot parse migration URI "${uri}": to must be >= the port ${result.port}: received ${to}`,
        );
      }
      result.to = to;
    } else if (Object.hasOwn(TCP_FLAGS, name)) {
      if (value !== undefined && value !== "on" && value !== "off") {
        fail(uri, `option "${name}" must be on or off: received "${value}"`);
      }
      result[TCP_FLAGS[name as keyof typeof TCP_FLAGS]] = value !== "off";
    } else {
      fail(
        uri,
        `option "${option}" is not supported: expected to, ipv4, ipv6, keep-alive or mptcp`,
      );
    }
  }
  return result;
}

function parseFile(uri: string, rest: string): FileTransportUri {
  const at = rest.indexOf(OFFSET_OPTION);
  const path = at < 0 ? rest : rest.slice(0, at);
  if (path === "") fail(uri, "a file path is required");
  if (at < 0) return { scheme: "file", path, offset: 0 };
  return {
    scheme: "file",
    path,
    offset: parseSize(uri, rest.slice(at + OFFSET_OPTION.length)),
  };
}

function parsePort(uri: string, text: string, name: string): number {
  if (text === "") {
    fail(uri, `a ${name === "to" ? "to port" : "port"} is required`);
  }
  if (!/^[0-9]+$/.test(text)) {
    fail(uri, `${name} must be a decimal number: received "${text}"`);
  }
  const port = Number(text);
  if (port > 65535) {
    throw new RangeError(
      `Cannot parse migration URI "${uri}": ${name} must be in [0, 65535]: received ${text}`,
    );
  }
  return port;
}

function checkPort(port: number, name: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(
      `Cannot format tcp: URI as ${name} must be an integer in [0, 65535]: received ${port}`,
    );
  }
}

const SIZE_SUFFIX: Readonly<Record<string, bigint>> = {
  b: 1n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
  e: 1n << 60n,
};

/** QEMU's `qemu_strtosz()`, limited to what a JavaScript number holds. */
function parseSize(uri: string, text: string): number {
  const match =
    /^(?:0[xX]([0-9a-fA-F]+)|([0-9]+)(?:(\.)([0-9]*))?([bBkKmMgGtTpPeE])?)$/
      .exec(text);
  const suffix = match?.[5]?.toLowerCase();
  if (match === null || (match[3] !== undefined && (suffix ?? "b") === "b")) {
    fail(
      uri,
      `offset "${text}" is not a size: expected digits with an optional B, K, M, G, T, P or E suffix (a fraction needs one of K to E), or 0x and hex digits`,
    );
  }
  let bytes: bigint;
  if (match[1] !== undefined) {
    bytes = BigInt(`0x${match[1]}`);
  } else {
    const multiplier = SIZE_SUFFIX[suffix ?? "b"]!;
    const fraction = match[4] ?? "";
    bytes = BigInt(match[2]!) * multiplier;
    if (fraction !== "") {
      bytes += BigInt(fraction) * multiplier / 10n ** BigInt(fraction.length);
    }
  }
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(
      `Cannot parse migration URI "${uri}": offset must be at most 2^53 - 1 bytes: received "${text}"`,
    );
  }
  return Number(bytes);
}

function fail(uri: string, detail: string): never {
  throw new TypeError(`Cannot parse migration URI "${uri}": ${detail}`);
}
