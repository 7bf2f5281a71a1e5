/**
 * One client of a QmpServer: greeting, capabilities negotiation, requests
 * in order (out-of-band ones at once), replies and events. Private to
 * lib/qmp/.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { Transport } from "../transport/transport.ts";
import { type JsonNode, JsonReader, nodeValue } from "./_json_reader.ts";
import { qdictOrder } from "./_qdict_order.ts";
import { visitArguments } from "./_visit_arguments.ts";
import type { QmpCommand } from "./qmp_command.ts";
import { QmpError } from "./qmp_error.ts";
import { formatQmpJson, type QmpValue } from "./qmp_json.ts";

/** What a session needs from its server. */
export interface SessionHost {
  /** The greeting line, without its line ending. */
  readonly greeting: string;
  /** Looks a command up (qmp_capabilities is the session's own). */
  command(name: string): QmpCommand | undefined;
}

/** Bytes a client may leave unread before it is dropped. */
const MAX_UNREAD_BYTES = 16 << 20;

const encoder = new TextEncoder();

const NEGOTIATION: QmpCommand = {
  arguments: [
    { name: "enable", type: { array: { enum: ["oob"] } }, optional: true },
  ],
  run() {},
};

/** A request's `id`, kept as sent (`null` included), or none. */
type RequestId = { readonly value: QmpValue };

/** A request without an `id`. */
const NO_ID: RequestId = { value: null };

/** A request that passed QEMU's envelope checks, or the refusal. */
type Request =
  | {
    ok: true;
    name: string;
    id: RequestId;
    outOfBand: boolean;
    arguments: JsonNode | undefined;
  }
  | { ok: false; desc: string; id: RequestId };

/** Resolves when `promise` settles, or after a second at most. */
function withinASecond(promise: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<void>((resolve) => timer = setTimeout(resolve, 1000)),
  ]).finally(() => clearTimeout(timer));
}

/** One connected client. */
export class QmpSession {
  readonly #transport: Transport;
  readonly #host: SessionHost;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #controller = new AbortController();
  #negotiated = false;
  #oob = false;
  #inBand: Promise<void> = Promise.resolve();
  #outOfBand: Promise<void> = Promise.resolve();
  #closed = false;
  readonly #gone = Promise.withResolvers<void>();

  constructor(transport: Transport, host: SessionHost) {
    this.#transport = transport;
    this.#host = host;
    this.#writer = transport.writable.getWriter();
  }

  /** Whether the client finished capabilities negotiation (and so gets events). */
  get negotiated(): boolean {
    return this.#negotiated && !this.#closed;
  }

  /** Greets the client and serves it until it disconnects. */
  async run(): Promise<void> {
    this.writeLine(this.#host.greeting);
    const reader = this.#transport.readable.getReader();
    const decoder = new TextDecoder();
    const json = new JsonReader();
    try {
      while (!this.#closed) {
        const { done, value } = await reader.read();
        if (done) break;
        for (
          const result of json.push(decoder.decode(value, { stream: true }))
        ) {
          if (result.kind === "error") {
            this.#queue(() =>
              this.#reply({ class: "GenericError", desc: result.desc }, NO_ID)
            );
          } else if (this.#isOutOfBand(result.value)) {
            const node = result.value;
            this.#outOfBand = this.#outOfBand.then(() => this.#request(node))
              .catch(() => {});
          } else {
            this.#queue(() => this.#request(result.value));
          }
        }
      }
    } catch {
      // the connection failed: same as a disconnect
    } finally {
      reader.releaseLock();
    }
    this.#controller.abort(
      new Error("Cannot run a QMP command: the client disconnected"),
    );
    // Commands still running may finish and answer, unless the server
    // closes the connection first.
    await Promise.race([
      Promise.all([this.#inBand, this.#outOfBand]),
      this.#gone.promise,
    ]);
    await this.close();
  }

  /** Writes one line (a reply, an event, the greeting) with QEMU's CRLF. */
  writeLine(line: string): void {
    if (this.#closed) return;
    if ((this.#writer.desiredSize ?? 0) < -MAX_UNREAD_BYTES) {
      void this.close(false);
      return;
    }
    this.#writer.write(encoder.encode(`${line}\r\n`)).catch(() =>
      this.close(false)
    );
  }

  /**
   * Disconnects the client. Safe to call more than once.
   *
   * @param flush Whether lines already written go out first (a reply to
   *   `quit`, an event), for at most a second; a client that stopped
   *   reading is cut off at once.
   */
  async close(flush = true): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#gone.resolve();
    this.#controller.abort(
      new Error("Cannot run a QMP command: the client disconnected"),
    );
    if (flush) await withinASecond(this.#writer.close().catch(() => {}));
    await this.#transport.close().catch(() => {});
  }

  #queue(task: () => Promise<void> | void): void {
    this.#inBand = this.#inBand.then(task).catch(() => {});
  }

  #isOutOfBand(node: JsonNode): boolean {
    if (!this.#oob || node.kind !== "object") return false;
    const keys = node.entries.map(([key]) => key);
    return keys.includes("exec-oob") && !keys.includes("execute");
  }

  async #request(node: JsonNode): Promise<void> {
    const request = this.#envelope(node);
    if (!request.ok) {
      return this.#reply(
        { class: "GenericError", desc: request.desc },
        request.id,
      );
    }
    const { name, id, outOfBand } = request;
    const fail = (desc: string, errorClass = "GenericError") =>
      this.#reply({ class: errorClass, desc }, id);
    const command = name === "qmp_capabilities"
      ? NEGOTIATION
      : this.#negotiated
      ? this.#host.command(name)
      : undefined;
    if (command === undefined) {
      return fail(
        this.#negotiated
          ? `The command ${name} has not been found`
          : "Expecting capabilities negotiation with 'qmp_capabilities'",
        "CommandNotFound",
      );
    }
    if (outOfBand && !command.allowOob) {
      return fail(`The command ${name} does not support OOB`);
    }
    const args = visitArguments(command.arguments ?? [], request.arguments);
    if (!args.ok) return fail(args.desc);
    if (command === NEGOTIATION) return this.#negotiate(args.value, id);
    try {
      const result = await command.run(args.value, {
        signal: this.#controller.signal,
        outOfBand,
      });
      this.#return(result ?? {}, id);
    } catch (error) {
      if (error instanceof QmpError) return fail(error.desc, error.class);
      return fail(describeError(error));
    }
  }

  /** QEMU's checks on the request object, in its order. */
  #envelope(node: JsonNode): Request {
    if (node.kind !== "object") {
      return { ok: false, desc: "QMP input must be a JSON object", id: NO_ID };
    }
    const members = new Map(node.entries);
    const idNode = members.get("id");
    const id: RequestId = idNode === undefined
      ? NO_ID
      : { value: nodeValue(idNode) };
    const refuse = (desc: string): Request => ({ ok: false, desc, id });
    for (const key of qdictOrder(node.entries.map(([key]) => key))) {
      const value = members.get(key)!;
      if (key === "execute" || (key === "exec-oob" && this.#oob)) {
        if (value.kind !== "string") {
          return refuse(`QMP input member '${key}' must be a string`);
        }
      } else if (key === "arguments") {
        if (value.kind !== "object") {
          return refuse("QMP input member 'arguments' must be an object");
        }
      } else if (key !== "id") {
        return refuse(`QMP input member '${key}' is unexpected`);
      }
    }
    const execute = members.get("execute");
    const outOfBand = members.get("exec-oob");
    if (execute !== undefined && outOfBand !== undefined) {
      return refuse("QMP input member 'execute' clashes with 'exec-oob'");
    }
    const nameNode = execute ?? outOfBand;
    if (nameNode === undefined || nameNode.kind !== "string") {
      return refuse("QMP input lacks member 'execute'");
    }
    return {
      ok: true,
      name: nameNode.value,
      id,
      outOfBand: outOfBand !== undefined,
      arguments: members.get("arguments"),
    };
  }

  #negotiate(args: Readonly<Record<string, QmpValue>>, id: RequestId): void {
    if (this.#negotiated) {
      return this.#reply({
        class: "CommandNotFound",
        desc: "Capabilities negotiation is already complete, command ignored",
      }, id);
    }
    this.#negotiated = true;
    this.#oob = (args.enable as string[] | undefined ?? []).includes("oob");
    this.#return({}, id);
  }

  #return(value: QmpValue, id: RequestId): void {
    this.writeLine(
      formatQmpJson(
        id === NO_ID ? { return: value } : { return: value, id: id.value },
      ),
    );
  }

  #reply(error: { class: string; desc: string }, id: RequestId): void {
    this.writeLine(
      formatQmpJson(id === NO_ID ? { error } : { error, id: id.value }),
    );
  }
}
