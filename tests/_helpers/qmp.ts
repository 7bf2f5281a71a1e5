/**
 * The QMP client the tests and tools use to drive a real QEMU: livemig's
 * own (`lib/qmp/qmp_client.ts`), which speaks to QEMU and to livemig's
 * monitor alike. Connect with `QmpClient.connect("unix:PATH")`, or wrap
 * QEMU's stdin/stdout in a transport and call `handshake()`.
 *
 * @module
 */

export {
  QmpClient,
  type QmpConnectOptions,
  type QmpEvent,
  type QmpExecuteOptions,
  type QmpGreeting,
} from "../../lib/qmp/qmp_client.ts";
export { QmpConnectionError } from "../../lib/qmp/qmp_connection_error.ts";
export { QmpError } from "../../lib/qmp/qmp_error.ts";
export type { QmpVersion } from "../../lib/qmp/qmp_server.ts";
