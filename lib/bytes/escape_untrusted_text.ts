/**
 * Makes text that came from outside (a migration stream's block, device or
 * machine names, strings of its vmdesc) safe to print on a terminal.
 *
 * @module
 */

/**
 * Characters a terminal may act on instead of showing: C0 controls (ESC
 * starts escape sequences), DEL, C1 controls (U+009B is a CSI on its own),
 * the bidirectional overrides and isolates that reorder what is shown, and
 * the backslash, so that an escape cannot be faked.
 */
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\\]/g;

const NAMED: Record<string, string> = {
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
  "\\": "\\\\",
};

/**
 * Escapes every character of `text` that a terminal could interpret:
 * control characters become `\n`, `\t`, `\r` or `\xNN`, DEL and C1 controls
 * `\xNN`, bidirectional controls `\u{NNNN}`, and a backslash `\\`. Other
 * text, non-ASCII letters included, is left as it is.
 *
 * @example Usage
 * ```ts
 * import { escapeUntrustedText } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(escapeUntrustedText("pc.ram"), "pc.ram");
 * assert.equal(escapeUntrustedText("\x1b[31mred\n"), "\\x1b[31mred\\n");
 * assert.equal(escapeUntrustedText("a\u202eb"), "a\\u{202e}b");
 * assert.equal(escapeUntrustedText("café"), "café");
 * ```
 *
 * @param text The untrusted text.
 * @returns The text with every such character escaped.
 */
export function escapeUntrustedText(text: string): string {
  return text.replace(UNSAFE, (char) => {
    const named = NAMED[char];
    if (named !== undefined) return named;
    const code = char.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u{${code.toString(16)}}`;
  });
}
