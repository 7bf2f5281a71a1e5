/**
 * How a QMP command's arguments are described, so the server can check them
 * the way QEMU's QAPI input visitor does and answer with QEMU's texts.
 *
 * | Type                  | Accepts                                     | QEMU's error                                                |
 * | --------------------- | ------------------------------------------- | ----------------------------------------------------------- |
 * | `"str"`               | a string                                    | `Invalid parameter type for 'P', expected: string`          |
 * | `"bool"`              | `true`, `false`                             | `… expected: boolean`                                        |
 * | `"int"`               | a 64-bit signed integer                     | `… expected: integer`                                        |
 * | `"uint64"`, `"size"`  | an integer; negative ones wrap (-1 → 2^64-1) | `Parameter 'P' expects uint64`                              |
 * | `"uint8"`, `"uint32"` | the same, then at most 255 / 4294967295     | `Parameter 'P' expects uint8_t` / `uint32_t`                 |
 * | `"number"`            | any number                                  | `… expected: number`                                         |
 * | `"str-or-null"`       | a string or `null` (QEMU's `StrOrNull`)     | `… expected: StrOrNull`                                      |
 * | `"any"`               | anything                                    |                                                             |
 * | `{ enum }`            | one of the strings                          | `Parameter 'NAME' does not accept value 'v'`                |
 * | `{ array }`           | a list of the element type                  | `… expected: array`                                          |
 * | `{ members }`         | an object with those members                | `… expected: object`, `Parameter 'P' is missing` / `is unexpected` |
 *
 * `P` is the member's full path (`capabilities[0].state`); an `enum` error
 * names only the member (`capability`), and `null` for a list element, as
 * QEMU does. Members are checked in the order given (QEMU's schema order),
 * members that are not in the schema afterwards.
 *
 * @module
 */

/** The type of one argument or member. */
export type QmpType =
  | "str"
  | "bool"
  | "int"
  | "uint8"
  | "uint32"
  | "uint64"
  | "size"
  | "number"
  | "str-or-null"
  | "any"
  | { readonly enum: readonly string[] }
  | { readonly array: QmpType }
  | { readonly members: readonly QmpMember[] };

/**
 * One argument of a command, or one member of an object argument.
 *
 * @example Usage
 * ```ts
 * import type { QmpMember } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const migrateArguments: QmpMember[] = [
 *   { name: "uri", type: "str" },
 *   { name: "detach", type: "bool", optional: true },
 * ];
 * assert.equal(migrateArguments[0]!.name, "uri");
 * ```
 */
export interface QmpMember {
  /** The name, e.g. `uri`. */
  readonly name: string;
  /** What it accepts. */
  readonly type: QmpType;
  /**
   * Whether it may be left out.
   *
   * @default {false}
   */
  readonly optional?: boolean;
}
