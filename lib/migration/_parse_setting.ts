/**
 * The small parsers behind `-c name=on|off` and `-p name=value`. Private
 * to lib/migration/.
 *
 * @module
 */

/**
 * Parses an on/off state (`true`/`false` too).
 *
 * @throws {TypeError} For anything else.
 */
export function parseSwitch(
  name: string,
  value: string,
  what: string,
): boolean {
  const state = value.toLowerCase();
  if (state === "on" || state === "true") return true;
  if (state === "off" || state === "false") return false;
  throw new TypeError(
    `Cannot set ${what} "${name}": its state must be on or off: received "${value}"`,
  );
}

/**
 * Parses a whole number.
 *
 * @throws {TypeError} For anything else.
 */
export function parseInteger(name: string, value: string): number {
  if (!/^\d+$/.test(value)) {
    throw new TypeError(
      `Cannot set parameter "${name}": expected a whole number: received "${value}"`,
    );
  }
  return Number(value);
}

/**
 * Splits `name=value`.
 *
 * @throws {TypeError} Without a name or a value.
 */
export function splitArgument(
  argument: string,
  what: string,
): [string, string] {
  const at = argument.indexOf("=");
  if (at <= 0 || at === argument.length - 1) {
    throw new TypeError(
      `Cannot parse ${what} "${argument}": expected name=value`,
    );
  }
  return [argument.slice(0, at), argument.slice(at + 1)];
}
