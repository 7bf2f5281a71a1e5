/**
 * multifd's channels run in Workers loaded from livemig's own module files;
 * without read permission for them a Worker cannot start, and a migration
 * would fail halfway with a peer that only sees a connection cut. The CLI
 * refuses such a command line up front instead.
 *
 * @module
 */

import { UsageError } from "./usage_error.ts";

/**
 * Refuses `what` when livemig's modules are local files this process may
 * not read (a Worker could not load them).
 *
 * @example Usage
 * ```ts
 * import { checkWorkerPermission } from "./check_worker_permission.ts";
 *
 * // Granted read permission (or modules that are not local files): no error.
 * checkWorkerPermission("multifd", "usage: livemig migrate URI");
 * ```
 *
 * @param what What needs the Workers, for the message.
 * @param usage The command's usage text.
 * @throws {UsageError} If the modules cannot be read.
 */
export function checkWorkerPermission(what: string, usage: string): void {
  const modules = new URL("../migration/", import.meta.url);
  if (modules.protocol !== "file:") return;
  const { state } = Deno.permissions.querySync({ name: "read", path: modules });
  if (state === "granted") return;
  throw new UsageError(
    `${what} needs --allow-read: its channels run in Workers loaded from ${
      decodeURIComponent(modules.pathname)
    } (the README's alias grants it)`,
    usage,
  );
}
