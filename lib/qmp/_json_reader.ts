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

import {
  type JsonReadResult,
  parseTokens,
  type Token,
  type TokenType,
} from "./_json_parser.ts";

export {
  type JsonNode,
  type JsonReadResult,
  nodeValue,
} from "./_json_parser.ts";

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
      case "escape":
        this.#stringChar(char);
        return true;
      case "keyword":
        if (char >= "a" && char <= "z") {
          this.#append(char);
          return true;
        }
        this.#emit("keyword");
        return false;
      default:
        return this.#numberChar(char);
    }
  }

  /** A character inside a string, or right after its backslash. */
  #stringChar(char: string): void {
    if (this.#state === "escape") {
      if (isControl(char)) {
        this.#error(char);
      } else {
        this.#append(char);
        this.#state = "string";
      }
    } else if (char === this.#quote) {
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
  }

  /** A character of a number; false when it ended the number. */
  #numberChar(char: string): boolean {
    const digit = isDigit(char);
    switch (this.#state) {
      case "sign":
        if (char === "0") this.#shift(char, "zero");
        else if (digit) this.#shift(char, "int");
        else this.#error(char);
        return true;
      case "zero":
        if (!digit) return this.#number(char, "int");
        this.#error(char);
        return true;
      case "int":
        if (!digit) return this.#number(char, "int");
        this.#append(char);
        return true;
      case "dot":
        if (digit) this.#shift(char, "fraction");
        else this.#error(char);
        return true;
      case "exponent":
        if (char === "+" || char === "-") this.#shift(char, "exponent-sign");
        else if (digit) this.#shift(char, "exponent-digits");
        else this.#error(char);
        return true;
      case "exponent-sign":
        if (digit) this.#shift(char, "exponent-digits");
        else this.#error(char);
        return true;
      default: // fraction, exponent-digits
        if (digit) {
          this.#append(char);
          return true;
        }
        if (this.#state === "fraction" && (char === "e" || char === "E")) {
          this.#shift(char, "exponent");
          return true;
        }
        this.#emit("float");
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
