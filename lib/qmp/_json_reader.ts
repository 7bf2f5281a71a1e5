/**
 * Reads a stream of JSON texts the way QEMU's QMP monitor does, with its
 * error texts. Private to lib/qmp/.
 *
 * QEMU cuts its input into JSON texts by counting brackets, not lines:
 *
 * 1. A lexer turns characters into tokens: `{ } [ ] : ,`, strings in double
 *    or single quotes, numbers, and lower-case keywords. A character that
 *    cannot start or continue a token is an error whose text runs from the
 *    token's start up to and including that character (`stray '01'`,
 *    `stray '"tab<TAB>'`). After an error the lexer skips input until a
 *    bracket or a control character other than tab, and goes on from there.
 * 2. A splitter collects tokens, counting `{`/`}` and `[`/`]` separately,
 *    and hands them to the parser as soon as both counts are back at zero
 *    or either one is below zero: `1`, `xyz` and `}` each make a text of
 *    their own, while `{"a": [}` waits for its `]`. More than 1024 open
 *    brackets is an error. A lexical error drops what was collected.
 * 3. The parser builds the value or names the first problem:
 *    `expecting value`, `missing : in object pair`, `duplicate key`,
 *    `key is not a string in object`, `expected separator in dict` / `list`,
 *    `invalid keyword 'x'`, `invalid escape sequence in string`,
 *    `\ud800 is not a valid Unicode character`.
 *
 * Integers that fit a signed or unsigned 64-bit integer stay exact; others
 * and numbers with a fraction or exponent are doubles.
 *
 * @module
 */

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

import type { QmpValue } from "./qmp_json.ts";

type TokenType =
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

interface Token {
  type: TokenType;
  text: string;
}

type LexState =
  | "start"
  | "string"
  | "escape"
  | "sign"
  | "zero"
  | "int"
  | "dot"
  | "fraction"
  | "exponent"
  | "exponent-sign"
  | "exponent-digits"
  | "keyword"
  | "recovery";

const MAX_NESTING = 1024;
const MAX_TOKEN_LENGTH = 64 << 20;
const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;

function isDigit(char: string): boolean {
  return char >= "0" && char <= "9";
}

function isControl(char: string): boolean {
  return char.charCodeAt(0) < 0x20;
}

/**
 * Splits a character stream into JSON texts and parses each, as QEMU's
 * monitor does. Feed it text with {@linkcode JsonReader.push}.
 */
export class JsonReader {
  #state: LexState = "start";
  #quote = '"';
  #text = "";
  #tokens: Token[] = [];
  #braces = 0;
  #brackets = 0;
  #results: JsonReadResult[] = [];

  /**
   * Reads more characters.
   *
   * @param chunk The next characters of the stream.
   * @returns The JSON texts (or errors) completed by this chunk, in order.
   */
  push(chunk: string): JsonReadResult[] {
    for (const char of chunk) this.#feed(char);
    const results = this.#results;
    this.#results = [];
    return results;
  }

  #feed(char: string): void {
    while (!this.#step(char)) {
      // the character ended a token and is looked at again from "start"
    }
  }

  /** Handles one character; false when it must be handled again. */
  #step(char: string): boolean {
    switch (this.#state) {
      case "recovery":
        if ("{}[]".includes(char) || (isControl(char) && char !== "\t")) {
          this.#state = "start";
          return false;
        }
        return true;
      case "start":
        return this.#start(char);
      case "string":
        if (char === this.#quote) {
          this.#text += char;
          this.#emit("string");
        } else if (char === "\\") {
          this.#text += char;
          this.#state = "escape";
        } else if (isControl(char)) {
          this.#error(char);
        } else {
          this.#append(char);
        }
        return true;
      case "escape":
        if (isControl(char)) {
          this.#error(char);
        } else {
          this.#append(char);
          this.#state = "string";
        }
        return true;
      case "sign":
        if (char === "0") this.#shift(char, "zero");
        else if (isDigit(char)) this.#shift(char, "int");
        else this.#error(char);
        return true;
      case "zero":
        if (isDigit(char)) {
          this.#error(char);
          return true;
        }
        return this.#number(char, "int");
      case "int":
        if (isDigit(char)) {
          this.#append(char);
          return true;
        }
        return this.#number(char, "int");
      case "dot":
        if (isDigit(char)) this.#shift(char, "fraction");
        else this.#error(char);
        return true;
      case "fraction":
        if (isDigit(char)) {
          this.#append(char);
          return true;
        }
        if (char === "e" || char === "E") {
          this.#shift(char, "exponent");
          return true;
        }
        this.#emit("float");
        return false;
      case "exponent":
        if (char === "+" || char === "-") this.#shift(char, "exponent-sign");
        else if (isDigit(char)) this.#shift(char, "exponent-digits");
        else this.#error(char);
        return true;
      case "exponent-sign":
        if (isDigit(char)) this.#shift(char, "exponent-digits");
        else this.#error(char);
        return true;
      case "exponent-digits":
        if (isDigit(char)) {
          this.#append(char);
          return true;
        }
        this.#emit("float");
        return false;
      case "keyword":
        if (char >= "a" && char <= "z") {
          this.#append(char);
          return true;
        }
        this.#emit("keyword");
        return false;
    }
  }

  #start(char: string): boolean {
    if (char === " " || char === "\t" || char === "\n" || char === "\r") {
      return true;
    }
    if ("{}[]:,".includes(char)) {
      this.#text = char;
      this.#emit(char as TokenType);
    } else if (char === '"' || char === "'") {
      this.#quote = char;
      this.#shift(char, "string");
    } else if (char === "-") {
      this.#shift(char, "sign");
    } else if (char === "0") {
      this.#shift(char, "zero");
    } else if (isDigit(char)) {
      this.#shift(char, "int");
    } else if (char >= "a" && char <= "z") {
      this.#shift(char, "keyword");
    } else {
      this.#error(char);
    }
    return true;
  }

  /** After the integer part of a number: a fraction, an exponent, or the end. */
  #number(char: string, type: "int"): boolean {
    if (char === ".") {
      this.#shift(char, "dot");
      return true;
    }
    if (char === "e" || char === "E") {
      this.#shift(char, "exponent");
      return true;
    }
    this.#emit(type);
    return false;
  }

  #shift(char: string, state: LexState): void {
    this.#append(char);
    this.#state = state;
  }

  #append(char: string): void {
    this.#text += char;
    if (this.#text.length > MAX_TOKEN_LENGTH) {
      this.#fail("JSON token size limit exceeded");
      this.#text = "";
      this.#state = "recovery";
    }
  }

  #error(char: string): void {
    this.#text += char;
    this.#emit("error");
    this.#state = "recovery";
  }

  #emit(type: TokenType): void {
    const token = { type, text: this.#text };
    this.#text = "";
    this.#state = "start";
    this.#token(token);
  }

  #token(token: Token): void {
    if (token.type === "error") {
      // C strings end at NUL, so QEMU's message does too.
      this.#fail(
        `JSON parse error, stray '${token.text.split("\u0000")[0]}'`,
      );
      return;
    }
    if (token.type === "{") this.#braces++;
    else if (token.type === "}") this.#braces--;
    else if (token.type === "[") this.#brackets++;
    else if (token.type === "]") this.#brackets--;
    this.#tokens.push(token);
    if (this.#braces + this.#brackets > MAX_NESTING) {
      this.#fail("JSON nesting depth limit exceeded");
      return;
    }
    if (this.#tokens.length > MAX_TOKEN_COUNT) {
      this.#fail("JSON token count limit exceeded");
      return;
    }
    if (
      this.#braces < 0 || this.#brackets < 0 ||
      (this.#braces === 0 && this.#brackets === 0)
    ) {
      const tokens = this.#tokens;
      this.#reset();
      this.#results.push(parseTokens(tokens));
    }
  }

  #fail(desc: string): void {
    this.#reset();
    this.#results.push({ kind: "error", desc });
  }

  #reset(): void {
    this.#tokens = [];
    this.#braces = 0;
    this.#brackets = 0;
  }
}

class ParseError extends Error {
  constructor(desc: string) {
    super(`JSON parse error, ${desc}`);
    this.name = "ParseError";
  }
}

function parseTokens(tokens: Token[]): JsonReadResult {
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
