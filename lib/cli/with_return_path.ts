import { type MigrationCapabilities, parseTransportUri } from "../../mod.ts";

/**
 * The capabilities with `return-path` on by default where the other end
 * can answer (tcp:, unix:), but for a background snapshot, which QEMU
 * refuses with it; refuses it for a file: URI, which cannot answer. Both
 * ends take the default, so a capability that needs the return path (such
 * as `switchover-ack`) is checked against what the connection can carry.
 *
 * @example Usage
 * ```ts
 * import { withReturnPath } from "./with_return_path.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(withReturnPath({}, "tcp:127.0.0.1:4444"), {
 *   "return-path": true,
 * });
 * assert.deepEqual(withReturnPath({}, "exec:cat"), {});
 * const snapshot = { "background-snapshot": true };
 * assert.deepEqual(withReturnPath(snapshot, "tcp:127.0.0.1:4444"), snapshot);
 * assert.throws(
 *   () => withReturnPath({ "return-path": true }, "file:/tmp/vm.mig"),
 *   /a file cannot answer/,
 * );
 * ```
 *
 * @param capabilities The capabilities asked for.
 * @param uri Where the migration goes (or comes from).
 * @returns The capabilities, return-path filled in.
 * @throws {TypeError} For return-path with a file: URI.
 */
export function withReturnPath(
  capabilities: Partial<MigrationCapabilities>,
  uri: string,
): Partial<MigrationCapabilities> {
  const { scheme } = parseTransportUri(uri);
  const asked = capabilities["return-path"];
  if (scheme === "file" && asked) {
    throw new TypeError(
      `Cannot use return-path with "${uri}": a file cannot answer`,
    );
  }
  if (
    asked !== undefined || (scheme !== "tcp" && scheme !== "unix") ||
    capabilities["background-snapshot"]
  ) {
    return capabilities;
  }
  return { ...capabilities, "return-path": true };
}
