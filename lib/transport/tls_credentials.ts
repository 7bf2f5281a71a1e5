import { describeError } from "../errors.ts";

/**
 * Which end of a TLS connection credentials serve, as QEMU's
 * `tls-creds-x509` `endpoint`: the migration destination is the server,
 * the source the client.
 */
export type TlsEndpoint = "client" | "server";

/**
 * x509 credentials for one end of a migration channel, as QEMU's
 * `tls-creds-x509` object holds them: PEM texts read from its directory.
 *
 * @example Usage
 * ```ts
 * import type { TlsCredentials } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const credentials: TlsCredentials = {
 *   dir: "/etc/pki/qemu",
 *   endpoint: "client",
 *   verifyPeer: false,
 *   caCert: "-----BEGIN CERTIFICATE-----\n…",
 * };
 * assert.equal(credentials.cert, undefined);
 * ```
 */
export interface TlsCredentials {
  /** The directory the files came from, for messages. */
  readonly dir: string;
  /** Which end these credentials serve. */
  readonly endpoint: TlsEndpoint;
  /**
   * Whether the peer's certificate is checked: a server asks for and checks
   * a client certificate; a client checks the server's certificate against
   * the CA and the host name. QEMU's default is on.
   */
  readonly verifyPeer: boolean;
  /** `ca-cert.pem`: the CA that signs the peer's certificate. */
  readonly caCert: string;
  /** `server-cert.pem` or `client-cert.pem`; a client may have none. */
  readonly cert?: string;
  /** `server-key.pem` or `client-key.pem`, with `cert`. */
  readonly key?: string;
}

/** Options for {@linkcode loadTlsCredentials}. */
export interface LoadTlsCredentialsOptions {
  /** Which end the credentials serve: picks `server-*.pem` or `client-*.pem`. */
  endpoint: TlsEndpoint;
  /**
   * Whether the peer's certificate is checked.
   *
   * @default {true}
   */
  verifyPeer?: boolean;
}

/**
 * Reads x509 credentials from a directory laid out as QEMU's
 * `tls-creds-x509` expects: `ca-cert.pem` always; `server-cert.pem` and
 * `server-key.pem` for a server; `client-cert.pem` and `client-key.pem`
 * for a client, which may go without when the server does not ask for one.
 * A missing required file is refused with QEMU's message.
 *
 * @example Usage
 * ```ts
 * import { loadTlsCredentials } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/ca-cert.pem`, "-----BEGIN CERTIFICATE-----\n");
 * const client = await loadTlsCredentials(dir, { endpoint: "client" });
 * assert.equal(client.verifyPeer, true);
 * assert.equal(client.cert, undefined);
 * await assert.rejects(
 *   loadTlsCredentials(dir, { endpoint: "server" }),
 *   new TypeError(`Unable to access credentials ${dir}/server-cert.pem: No such file or directory`),
 * );
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param dir The directory.
 * @param options The endpoint and whether the peer is verified.
 * @returns The credentials.
 * @throws {TypeError} If a required file cannot be read.
 */
export async function loadTlsCredentials(
  dir: string,
  options: LoadTlsCredentialsOptions,
): Promise<TlsCredentials> {
  const { endpoint, verifyPeer = true } = options;
  const caCert = await readPem(dir, "ca-cert.pem", true);
  const cert = await readPem(
    dir,
    `${endpoint}-cert.pem`,
    endpoint === "server",
  );
  const key = await readPem(
    dir,
    `${endpoint}-key.pem`,
    endpoint === "server" || cert !== undefined,
  );
  return {
    dir,
    endpoint,
    verifyPeer,
    caCert: caCert!,
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
  };
}

async function readPem(
  dir: string,
  name: string,
  required: boolean,
): Promise<string | undefined> {
  const path = `${dir.replace(/\/+$/, "")}/${name}`;
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (!required && error instanceof Deno.errors.NotFound) return undefined;
    const reason = error instanceof Deno.errors.NotFound
      ? "No such file or directory"
      : describeError(error);
    throw new TypeError(`Unable to access credentials ${path}: ${reason}`, {
      cause: error,
    });
  }
}
