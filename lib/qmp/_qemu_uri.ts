/**
 * Migration URIs as QEMU 7.2's `migrate` and `migrate-incoming` check
 * them, with QEMU's error texts, and the text QEMU gives a connection that
 * failed. Private to lib/qmp/.
 *
 * | URI                         | `migrate`                                              | `migrate-incoming`                     |
 * | --------------------------- | ------------------------------------------------------ | -------------------------------------- |
 * | `tcp:HOST:PORT`             | connects                                               | listens                                |
 * | `tcp:` without a port       | `error parsing address 'X'` (also in `error-desc`)     | the same                               |
 * | `unix:` without a path      | `invalid Unix socket address` (also in `error-desc`)   | the same                               |
 * | `exec:COMMAND`              | runs it                                                | runs it                                |
 * | anything else (`file:` too) | `Parameter 'uri' expects a valid migration protocol`   | `unknown migration protocol: X`        |
 *
 * `vsock:`, `rdma:` and `fd:`, which QEMU has, are refused with livemig's
 * own message (it does not implement them).
 *
 * @module
 */

import { describeError } from "../errors.ts";
import {
  parseTransportUri,
  type TransportUri,
} from "../transport/transport_uri.ts";

/** A URI QEMU accepts, or QEMU's refusal. */
export type QemuUriCheck =
  | { ok: true; uri: TransportUri }
  | {
    ok: false;
    /** The error reply's desc. */
    desc: string;
    /** Whether `query-migrate` shows it as `error-desc` afterwards. */
    errorDesc: boolean;
  };

/**
 * Checks a URI for `migrate` (`direction` outgoing) or `migrate-incoming`.
 *
 * @param uri The URI.
 * @param direction Which command.
 * @returns The parsed URI or QEMU's refusal.
 */
export function checkQemuUri(
  uri: string,
  direction: "outgoing" | "incoming",
): QemuUriCheck {
  const scheme = /^(tcp|unix|exec|vsock|rdma|fd):/.exec(uri)?.[1];
  if (scheme === undefined) {
    return {
      ok: false,
      desc: direction === "outgoing"
        ? "Parameter 'uri' expects a valid migration protocol"
        : `unknown migration protocol: ${uri}`,
      errorDesc: false,
    };
  }
  const address = uri.slice(scheme.length + 1);
  if (scheme === "tcp" && !/^(\[[^\]]+\]|[^:]+):[^,]+/.test(address)) {
    return {
      ok: false,
      desc: `error parsing address '${address}'`,
      errorDesc: true,
    };
  }
  if (scheme === "unix" && address === "") {
    return { ok: false, desc: "invalid Unix socket address", errorDesc: true };
  }
  try {
    return { ok: true, uri: parseTransportUri(uri) };
  } catch (error) {
    return { ok: false, desc: describeError(error), errorDesc: true };
  }
}

/** The C library's texts for the errors a connection attempt meets. */
const STRERROR: Record<string, string> = {
  ConnectionRefused: "Connection refused",
  NotFound: "No such file or directory",
  PermissionDenied: "Permission denied",
  TimedOut: "Connection timed out",
  ConnectionReset: "Connection reset by peer",
};

/**
 * QEMU's text for a connection that failed:
 * `Failed to connect to '127.0.0.1:1': Connection refused`.
 *
 * @param uri Where it tried to connect.
 * @param error What the transport threw.
 * @returns The text.
 */
export function connectFailure(uri: TransportUri, error: unknown): string {
  let cause: unknown = error;
  while (
    cause instanceof Error && cause.cause instanceof Error &&
    cause.name === "TransportError"
  ) {
    cause = cause.cause;
  }
  const reason = cause instanceof Error
    ? STRERROR[cause.name] ?? cause.message.replace(/ \(os error \d+\)$/, "")
    : describeError(cause);
  switch (uri.scheme) {
    case "tcp":
      return `Failed to connect to '${uri.host}:${uri.port}': ${reason}`;
    case "unix":
      return `Failed to connect to '${uri.path}': ${reason}`;
    default:
      return describeError(error);
  }
}
