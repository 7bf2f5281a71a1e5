import { parseDuration } from "../../mod.ts";
import { asUsageError } from "./usage_error.ts";

/**
 * Reads `--idle-timeout DURATION` (`incoming`, `proxy`): milliseconds, 0
 * when not given (wait forever, as QEMU does).
 *
 * @example Usage
 * ```ts
 * import { parseIdleTimeout } from "./parse_idle_timeout.ts";
 * import { UsageError } from "./usage_error.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseIdleTimeout("30s", "usage"), 30_000);
 * assert.equal(parseIdleTimeout(undefined, "usage"), 0);
 * assert.throws(() => parseIdleTimeout("soon", "usage"), UsageError);
 * ```
 *
 * @param value The flag's value, if given.
 * @param usage The command's usage text, for a bad value.
 * @returns Milliseconds.
 * @throws {UsageError} If the value is not a duration.
 */
export function parseIdleTimeout(
  value: string | undefined,
  usage: string,
): number {
  return asUsageError(
    usage,
    () => parseDuration(value ?? "0", "--idle-timeout"),
  );
}
