/**
 * The parser half of the QMP JSON reader (`_json_reader.ts`): builds a
 * value from one JSON text's tokens, or names the first problem with
 * QEMU's text. Private to lib/qmp/.
 *
 * @module
 */

import type { QmpValue } from "./qmp_json.ts";

/** A JSON value as QEMU holds it: integers and doubles kept apart. */
export type JsonNode =
  | { kind: "null" }
  | { kind: "bool"; value: boolean }
  | { kind: "int"; value: bigint }
  | { kind: "double"; value: number }
  | { kind: "string"; value: string }
  | { kind: "array"; items: JsonNode[] }
  | { kind: "object"; entries: [string, JsonNode][] };

/** One JSON text read from the stream, or why it could not be read. */
export type JsonReadResult =
  | { kind: "value"; value: JsonNode }
  | { kind: "error"; desc: string };

/** What a token is. */
export type TokenType =
  | "{"
  | "}"
  | "["
  | "]"
  | ":"
  | ","
  | "string"
  | "int"
  | "float"
  | "keyword"
  | "error";

/** One token of a JSON text. */
export interface Token {
  type: TokenType;
  text: string;
}

class ParseError extends Error {
  constructor(desc: string) {
    super(`JSON parse error, ${desc}`);
    this.name = "ParseError";
  }
}

const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;

/**
 * Parses one JSON text's tokens.
 *
 * @param tokens The tokens, as the lexer cut them.
 * @returns The value, or QEMU's text for the first problem.
 */
export function parseTokens(tokens: Token[]): JsonReadResult {
  const parser = new TokenParser(tokens);
  try {
    return { kind: "value", value: parser.value() };
  } catch (error) {
    if (!(error instanceof ParseError)) throw error;
    return { kind: "error", desc: error.message };
  }
}

class TokenParser {
  readonly #tokens: Token[];
  #next = 0;

  constructor(tokens: Token[]) {
    this.#tokens = tokens;
  }

  #take(): Token {
    const token = this.#tokens[this.#next++];
    if (token === undefined) throw new ParseError("premature EOI");
    return token;
  }

  #peek(): Token | undefined {
    return this.#tokens[this.#next];
  }

  value(): JsonNode {
    const token = this.#take();
    switch (token.type) {
      case "{":
        return this.#object();
      case "[":
        return this.#array();
      case "string":
        return { kind: "string", value: decodeString(token.text) };
      case "int":
        return decodeInteger(token.text);
      case "float":
        return { kind: "double", value: Number(token.text) };
      case "keyword":
        if (token.text === "true") return { kind: "bool", value: true };
        if (token.text === "false") return { kind: "bool", value: false };
        if (token.text === "null") return { kind: "null" };
        throw new ParseError(`invalid keyword '${token.text}'`);
      default:
        throw new ParseError("expecting value");
    }
  }

  #object(): JsonNode {
    const entries: [string, JsonNode][] = [];
    if (this.#peek()?.type === "}") {
      this.#next++;
      return { kind: "object", entries };
    }
    while (true) {
      const key = this.value();
      if (key.kind !== "string") {
        throw new ParseError("key is not a string in object");
      }
      if (this.#take().type !== ":") {
        throw new ParseError("missing : in object pair");
      }
      const value = this.value();
      if (entries.some(([name]) => name === key.value)) {
        throw new ParseError("duplicate key");
      }
      entries.push([key.value, value]);
      const separator = this.#take();
      if (separator.type === "}") return { kind: "object", entries };
      if (separator.type !== ",") {
        throw new ParseError("expected separator in dict");
      }
    }
  }

  #array(): JsonNode {
    const items: JsonNode[] = [];
    if (this.#peek()?.type === "]") {
      this.#next++;
      return { kind: "array", items };
    }
    while (true) {
      items.push(this.value());
      const separator = this.#take();
      if (separator.type === "]") return { kind: "array", items };
      if (separator.type !== ",") {
        throw new ParseError("expected separator in list");
      }
    }
  }
}

function decodeInteger(text: string): JsonNode {
  const value = BigInt(text);
  if (value >= INT64_MIN && value <= UINT64_MAX) return { kind: "int", value };
  return { kind: "double", value: Number(text) };
}

const ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  "\\": "\\",
  "/": "/",
  "b": "\b",
  "f": "\f",
  "n": "\n",
  "r": "\r",
  "t": "\t",
};

/** Decodes a string token, quotes included. */
function decodeString(token: string): string {
  let result = "";
  const end = token.length - 1;
  for (let i = 1; i < end; i++) {
    const char = token[i]!;
    if (char !== "\\") {
      result += char;
      continue;
    }
    const escape = token[i + 1]!;
    if (escape in ESCAPES) {
      result += ESCAPES[escape];
      i++;
      continue;
    }
    if (escape !== "u") {
      throw new ParseError("invalid escape sequence in string");
    }
    const high = readHex4(token, i);
    i += 5;
    if (high >= 0xdc00 && high <= 0xdfff) {
      throw notUnicode(token.slice(i - 5, i + 1));
    }
    if (high >= 0xd800 && high <= 0xdbff) {
      const start = i - 5;
      if (token[i + 1] !== "\\" || token[i + 2] !== "u") {
        throw notUnicode(token.slice(start, i + 1));
      }
      let low: number;
      try {
        low = readHex4(token, i + 1);
      } catch {
        throw notUnicode(token.slice(start, i + 1));
      }
      if (low < 0xdc00 || low > 0xdfff) {
        throw notUnicode(token.slice(start, i + 1));
      }
      result += String.fromCharCode(high, low);
      i += 6;
      continue;
    }
    result += String.fromCharCode(high);
  }
  return result;
}

/** Reads the 4 hex digits after `\u` at `at` (the backslash). */
function readHex4(token: string, at: number): number {
  let value = 0;
  for (let k = 0; k < 4; k++) {
    const char = token[at + 2 + k] ?? "";
    const digit = parseInt(char, 16);
    if (!/^[0-9a-fA-F]$/.test(char)) {
      throw notUnicode(token.slice(at, at + 6));
    }
    value = value * 16 + digit;
  }
  return value;
}

function notUnicode(text: string): ParseError {
  return new ParseError(`${text} is not a valid Unicode character`);
}

/**
 * The plain value of a node: integers as numbers when they are safe, as
 * bigints otherwise; doubles as numbers.
 *
 * @param node A parsed node.
 * @returns Its value.
 */
export function nodeValue(node: JsonNode): QmpValue {
  switch (node.kind) {
    case "null":
      return null;
    case "bool":
    case "string":
    case "double":
      return node.value;
    case "int": {
      const number = Number(node.value);
      return Number.isSafeInteger(number) ? number : node.value;
    }
    case "array":
      return node.items.map(nodeValue);
    case "object": {
      const object: Record<string, QmpValue> = {};
      for (const [key, value] of node.entries) object[key] = nodeValue(value);
      return object;
    }
  }
}
