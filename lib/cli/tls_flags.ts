import {
  createMemoryTransportPair,
  loadTlsCredentials,
  type MigrationMonitor,
  QmpClient,
  type TlsAuthz,
  type TlsEndpoint,
  type TlsOptions,
} from "../../mod.ts";
import { UsageError } from "./usage_error.ts";

/** The TLS flags of `migrate`, `incoming`, `proxy` and `run`. */
export const TLS_FLAGS = {
  "tls-creds": { type: "string" },
  "tls-hostname": { type: "string" },
  "tls-authz": { type: "string", multiple: true },
  "tls-verify-peer": { type: "string" },
} as const;

/** The usage text of {@linkcode TLS_FLAGS}, to go under "Options:". */
export const TLS_FLAGS_USAGE =
  `  --tls-creds DIR      Run TLS on every connection, with the x509 files of
                       DIR laid out as QEMU's tls-creds-x509 (ca-cert.pem,
                       server-cert.pem, server-key.pem, client-cert.pem,
                       client-key.pem); a destination is the TLS server, a
                       source the client
  --tls-verify-peer on|off
                       Check the peer's certificate (default on, as QEMU)
  --tls-hostname NAME  (source) The name the destination's certificate must
                       carry (default: the host of the URI)
  --tls-authz DN       (destination) Allow only clients whose certificate
                       has this distinguished name, as QEMU prints it
                       (C=GB,O=Example,CN=source.example); repeatable;
                       @FILE reads one per line`;

/** The flags {@linkcode parseTlsFlags} reads. */
export interface TlsFlagValues {
  "tls-creds"?: string | undefined;
  "tls-hostname"?: string | undefined;
  "tls-authz"?: string[] | undefined;
  "tls-verify-peer"?: string | undefined;
}

/**
 * Reads the TLS flags for one end of a connection; `undefined` when
 * `--tls-creds` is not given (the other TLS flags are then refused).
 *
 * @example Usage
 * ```ts
 * import { parseTlsFlags } from "./tls_flags.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(await parseTlsFlags({}, "client", "usage"), undefined);
 * await assert.rejects(parseTlsFlags({ "tls-hostname": "a" }, "client", "usage"), /needs --tls-creds/);
 * ```
 *
 * @param flags The parsed flags.
 * @param endpoint Which end this process is on the connection.
 * @param usage The usage text a bad flag is reported with.
 * @returns The TLS options, or `undefined` for a plain connection.
 * @throws {UsageError} For a bad flag, or credentials that cannot be read.
 */
export async function parseTlsFlags(
  flags: TlsFlagValues,
  endpoint: TlsEndpoint,
  usage: string,
): Promise<TlsOptions | undefined> {
  const dir = flags["tls-creds"];
  const hostname = flags["tls-hostname"];
  const authz = flags["tls-authz"];
  const verify = flags["tls-verify-peer"];
  if (dir === undefined) {
    const other = hostname !== undefined
      ? "--tls-hostname"
      : authz !== undefined
      ? "--tls-authz"
      : verify !== undefined
      ? "--tls-verify-peer"
      : undefined;
    if (other === undefined) return undefined;
    throw new UsageError(`${other} needs --tls-creds DIR`, usage);
  }
  if (verify !== undefined && verify !== "on" && verify !== "off") {
    throw new UsageError(
      `Cannot use --tls-verify-peer "${verify}": expected on or off`,
      usage,
    );
  }
  if (endpoint === "client" && authz !== undefined) {
    throw new UsageError(
      "--tls-authz checks the clients of a destination: a source has none",
      usage,
    );
  }
  if (endpoint === "server" && hostname !== undefined) {
    throw new UsageError(
      "--tls-hostname names the destination a source checks: a destination has none",
      usage,
    );
  }
  let credentials;
  try {
    credentials = await loadTlsCredentials(dir, {
      endpoint,
      verifyPeer: verify !== "off",
    });
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    throw new UsageError(`Cannot use --tls-creds: ${error.message}`, usage);
  }
  return {
    credentials,
    ...(hostname === undefined ? {} : { hostname }),
    ...(authz === undefined ? {} : { authz: await readAuthz(authz, usage) }),
  };
}

async function readAuthz(values: string[], usage: string): Promise<TlsAuthz> {
  const names: string[] = [];
  for (const value of values) {
    if (!value.startsWith("@")) {
      names.push(value);
      continue;
    }
    let text: string;
    try {
      text = await Deno.readTextFile(value.slice(1));
    } catch (error) {
      throw new UsageError(
        `Cannot read --tls-authz ${value}: ${(error as Error).message}`,
        usage,
      );
    }
    for (const line of text.split("\n")) {
      const name = line.trim();
      if (name !== "" && !name.startsWith("#")) names.push(name);
    }
  }
  return {
    policy: "deny",
    rules: names.map((match) => ({ match, policy: "allow" as const })),
  };
}

/**
 * Gives a monitor the TLS settings of the command line the way a QMP
 * client gives them to QEMU: `object-add` of a `tls-creds-x509` object
 * `tls0` (and an `authz-list` `auth0`), then `migrate-set-parameters`.
 *
 * @example Usage
 * ```ts ignore
 * await configureMonitorTls(monitor, await parseTlsFlags(flags, "server", USAGE));
 * ```
 *
 * @param monitor The monitor, before anyone else connects to it.
 * @param tls The settings from {@linkcode parseTlsFlags}.
 */
export async function configureMonitorTls(
  monitor: MigrationMonitor,
  tls: TlsOptions,
): Promise<void> {
  const [near, far] = createMemoryTransportPair();
  const served = monitor.handle(far);
  const qmp = await QmpClient.connect(near);
  try {
    const { credentials, hostname, authz } = tls;
    await qmp.execute("object-add", {
      "qom-type": "tls-creds-x509",
      id: "tls0",
      dir: credentials.dir,
      endpoint: credentials.endpoint,
      "verify-peer": credentials.verifyPeer,
    });
    if (authz !== undefined) {
      await qmp.execute("object-add", {
        "qom-type": "authz-list",
        id: "auth0",
        policy: authz.policy,
        rules: authz.rules.map((rule) => ({
          match: rule.match,
          policy: rule.policy,
          format: rule.format ?? "exact",
        })),
      });
    }
    await qmp.execute("migrate-set-parameters", {
      "tls-creds": "tls0",
      ...(hostname === undefined ? {} : { "tls-hostname": hostname }),
      ...(authz === undefined ? {} : { "tls-authz": "auth0" }),
    });
  } finally {
    await qmp.close();
    await served;
  }
}
