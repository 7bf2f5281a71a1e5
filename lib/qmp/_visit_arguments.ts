/**
 * Checks a command's arguments against its schema the way QEMU's QAPI input
 * visitor does, with its error texts. Private to lib/qmp/; the schema
 * language is described in qmp_schema.ts.
 *
 * @module
 */

import { unexpectedMembers } from "./_ghash_order.ts";
import { type JsonNode, nodeValue } from "./_json_reader.ts";
import type { QmpValue } from "./qmp_json.ts";
import type { QmpMember, QmpType } from "./qmp_schema.ts";

/** The checked arguments, or QEMU's description of the first problem. */
export type VisitResult =
  | { ok: true; value: Record<string, QmpValue> }
  | { ok: false; desc: string };

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;

class VisitError extends Error {
  constructor(readonly desc: string) {
    super(desc);
    this.name = "VisitError";
  }
}

/**
 * Checks `args` (the request's `arguments`, absent when left out) against
 * `members`.
 *
 * @param members The command's arguments in QEMU's schema order.
 * @param args The `arguments` object of the request.
 * @returns The arguments as plain values, or QEMU's desc.
 */
export function visitArguments(
  members: readonly QmpMember[],
  args: JsonNode | undefined,
): VisitResult {
  try {
    const value = visitObject(
      members,
      args ?? { kind: "object", entries: [] },
      undefined,
    );
    return { ok: true, value };
  } catch (error) {
    if (!(error instanceof VisitError)) throw error;
    return { ok: false, desc: error.desc };
  }
}

function visitObject(
  members: readonly QmpMember[],
  node: JsonNode,
  path: string | undefined,
): Record<string, QmpValue> {
  if (node.kind !== "object") {
    throw new VisitError(
      `Invalid parameter type for '${path ?? "null"}', expected: object`,
    );
  }
  const given = new Map(node.entries);
  const result: Record<string, QmpValue> = {};
  for (const member of members) {
    const memberPath = path === undefined
      ? member.name
      : `${path}.${member.name}`;
    const value = given.get(member.name);
    given.delete(member.name);
    if (value === undefined) {
      if (member.optional) continue;
      throw new VisitError(`Parameter '${memberPath}' is missing`);
    }
    result[member.name] = visit(member.type, value, memberPath, member.name);
  }
  const [name] = unexpectedMembers(
    node.entries.map(([key]) => key),
    new Set(members.map((member) => member.name)),
  );
  if (name !== undefined) {
    throw new VisitError(
      `Parameter '${
        path === undefined ? name : `${path}.${name}`
      }' is unexpected`,
    );
  }
  return result;
}

function visit(
  type: QmpType,
  node: JsonNode,
  path: string,
  name: string,
): QmpValue {
  const wrongType = (expected: string) =>
    new VisitError(
      `Invalid parameter type for '${path}', expected: ${expected}`,
    );
  if (typeof type === "object") {
    if ("enum" in type) {
      if (node.kind !== "string") throw wrongType("string");
      if (!type.enum.includes(node.value)) {
        throw new VisitError(
          `Parameter '${name}' does not accept value '${node.value}'`,
        );
      }
      return node.value;
    }
    if ("array" in type) {
      if (node.kind !== "array") throw wrongType("array");
      return node.items.map((item, index) =>
        visit(type.array, item, `${path}[${index}]`, "null")
      );
    }
    return visitObject(type.members, node, path);
  }
  switch (type) {
    case "any":
      return nodeValue(node);
    case "str":
      if (node.kind !== "string") throw wrongType("string");
      return node.value;
    case "bool":
      if (node.kind !== "bool") throw wrongType("boolean");
      return node.value;
    case "str-or-null":
      if (node.kind === "null") return null;
      if (node.kind !== "string") throw wrongType("StrOrNull");
      return node.value;
    case "number":
      if (node.kind === "int") return Number(node.value);
      if (node.kind !== "double") throw wrongType("number");
      return node.value;
    case "int":
      if (
        node.kind !== "int" || node.value < INT64_MIN ||
        node.value > INT64_MAX
      ) {
        throw wrongType("integer");
      }
      return integer(node.value);
    case "uint64":
    case "size":
      return integer(unsigned(node, path));
    case "uint8":
    case "uint32": {
      const value = unsigned(node, path);
      const max = type === "uint8" ? 0xffn : 0xffff_ffffn;
      if (value > max) {
        throw new VisitError(`Parameter '${path}' expects ${type}_t`);
      }
      return integer(value);
    }
  }
}

/** An integer as QEMU reads it into a uint64: negative values wrap. */
function unsigned(node: JsonNode, path: string): bigint {
  if (node.kind !== "int") {
    throw new VisitError(`Parameter '${path}' expects uint64`);
  }
  return node.value < 0n ? node.value + UINT64_MAX + 1n : node.value;
}

function integer(value: bigint): number | bigint {
  const number = Number(value);
  return Number.isSafeInteger(number) ? number : value;
}
