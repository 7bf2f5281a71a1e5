/**
 * The QOM objects a monitor holds for TLS, as QEMU 7.2's `object-add` and
 * `object-del` make them: `tls-creds-x509` (credentials read from a
 * directory when the object is added) and `authz-list` (allowed client
 * DNs). `tls-creds` and `tls-authz` name them by id; they are looked up
 * when a migration connects or listens, with QEMU's messages. Private to
 * lib/qmp/.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { TlsAuthz, TlsAuthzRule } from "../transport/tls_authz.ts";
import {
  loadTlsCredentials,
  type TlsCredentials,
  type TlsEndpoint,
} from "../transport/tls_credentials.ts";
import type { TlsOptions } from "../transport/tls_transport.ts";
import type { QmpCommandTable } from "./qmp_command.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";
import type { QmpMember } from "./qmp_schema.ts";

const POLICY = { enum: ["deny", "allow"] } as const;

/** Members of each type besides `qom-type` and `id`, in QEMU's order. */
const TYPE_MEMBERS: Record<string, readonly QmpMember[]> = {
  "tls-creds-x509": [
    { name: "verify-peer", type: "bool", optional: true },
    { name: "dir", type: "str", optional: true },
    { name: "endpoint", type: { enum: ["client", "server"] }, optional: true },
    { name: "priority", type: "str", optional: true },
    { name: "sanity-check", type: "bool", optional: true },
    { name: "passwordid", type: "str", optional: true },
  ],
  "authz-list": [
    { name: "policy", type: POLICY, optional: true },
    {
      name: "rules",
      type: {
        array: {
          members: [
            { name: "match", type: "str" },
            { name: "policy", type: POLICY },
            {
              name: "format",
              type: { enum: ["exact", "glob"] },
              optional: true,
            },
          ],
        },
      },
      optional: true,
    },
  ],
};

/** `object-add`'s arguments: the union of both types' members. */
const OBJECT_ADD_ARGUMENTS: readonly QmpMember[] = [
  { name: "qom-type", type: { enum: Object.keys(TYPE_MEMBERS) } },
  { name: "id", type: "str" },
  ...TYPE_MEMBERS["tls-creds-x509"]!,
  ...TYPE_MEMBERS["authz-list"]!,
];

type QomObject =
  | { type: "tls-creds-x509"; credentials: TlsCredentials }
  | { type: "authz-list"; authz: TlsAuthz };

/** The objects, by id. */
export class QomObjects {
  readonly #objects = new Map<string, QomObject>();

  /** `object-add` and `object-del`. */
  commands(): QmpCommandTable {
    return {
      "object-add": {
        arguments: OBJECT_ADD_ARGUMENTS,
        run: (args) => this.#add(args),
      },
      "object-del": {
        arguments: [{ name: "id", type: "str" }],
        run: (args) => this.#delete(args.id as string),
      },
    };
  }

  /**
   * The TLS settings of a connection, from the `tls-creds` and
   * `tls-authz` (server) or `tls-hostname` (client) parameters; undefined
   * when `tls-creds` is empty.
   *
   * @throws {Error} With QEMU's message for an id that names no fitting object.
   */
  tlsFor(
    endpoint: TlsEndpoint,
    parameters: Readonly<Record<string, QmpValue>>,
  ): TlsOptions | undefined {
    const id = parameters["tls-creds"];
    if (typeof id !== "string" || id === "") return undefined;
    const object = this.#objects.get(id);
    if (object === undefined) {
      throw new Error(`No TLS credentials with id '${id}'`);
    }
    if (object.type !== "tls-creds-x509") {
      throw new Error(`Object with id '${id}' is not TLS credentials`);
    }
    if (object.credentials.endpoint !== endpoint) {
      throw new Error(`Expected TLS credentials for a ${endpoint} endpoint`);
    }
    const hostname = parameters["tls-hostname"];
    const authzId = parameters["tls-authz"];
    let authz: TlsAuthz | undefined;
    if (endpoint === "server" && typeof authzId === "string" && authzId) {
      const found = this.#objects.get(authzId);
      if (found === undefined) {
        throw new Error(`Cannot find QAuthZ object ID ${authzId}`);
      }
      if (found.type !== "authz-list") {
        throw new Error(`Object '${authzId}' is not a QAuthZ subclass`);
      }
      authz = found.authz;
    }
    return {
      credentials: object.credentials,
      ...(endpoint === "client" && typeof hostname === "string" && hostname
        ? { hostname }
        : {}),
      ...(authz ? { authz } : {}),
    };
  }

  async #add(args: Readonly<Record<string, QmpValue>>): Promise<void> {
    const type = args["qom-type"] as string;
    const id = args.id as string;
    const allowed = new Set(["qom-type", "id"]);
    for (const member of TYPE_MEMBERS[type]!) allowed.add(member.name);
    for (const name of Object.keys(args)) {
      if (!allowed.has(name)) fail(`Parameter '${name}' is unexpected`);
    }
    if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) {
      fail("Parameter 'id' expects an identifier");
    }
    if (this.#objects.has(id)) {
      fail(
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
    const object = type === "authz-list"
      ? authzList(args)
      : await x509Credentials(args);
    // Added while the files were read: the first one wins, as in QEMU.
    if (this.#objects.has(id)) {
      fail(
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
    this.#objects.set(id, object);
  }

  #delete(id: string): void {
    if (!this.#objects.delete(id)) fail(`object '${id}' not found`);
  }
}

function authzList(args: Readonly<Record<string, QmpValue>>): QomObject {
  const rules = (args.rules ?? []) as Record<string, QmpValue>[];
  return {
    type: "authz-list",
    authz: {
      policy: (args.policy ?? "deny") as "allow" | "deny",
      rules: rules.map((rule): TlsAuthzRule => ({
        match: rule.match as string,
        policy: rule.policy as "allow" | "deny",
        format: (rule.format ?? "exact") as "exact" | "glob",
      })),
    },
  };
}

async function x509Credentials(
  args: Readonly<Record<string, QmpValue>>,
): Promise<QomObject> {
  const dir = args.dir as string | undefined;
  if (dir === undefined) fail("Missing 'dir' property value");
  try {
    return {
      type: "tls-creds-x509",
      credentials: await loadTlsCredentials(dir, {
        endpoint: (args.endpoint ?? "client") as TlsEndpoint,
        verifyPeer: (args["verify-peer"] ?? true) as boolean,
      }),
    };
  } catch (error) {
    fail(describeError(error), error);
  }
}

function fail(desc: string, cause?: unknown): never {
  throw new QmpError({ desc, ...(cause === undefined ? {} : { cause }) });
}
