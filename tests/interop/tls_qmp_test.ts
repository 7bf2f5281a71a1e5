/**
 * The monitor's `object-add` / `object-del` of `tls-creds-x509` and
 * `authz-list` answer as QEMU 7.2 does (each request sent to both), and a
 * QMP-driven `migrate` with `tls-creds` runs over TLS.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import {
  createMemoryTransportPair,
  MigrationMonitor,
  QmpClient,
  QmpError,
  SimulatedGuest,
} from "../../mod.ts";
import {
  freeLoopbackPort,
  startQemu,
  waitForStatus,
} from "../_helpers/qemu.ts";
import {
  captureIo,
  firmwareIn,
  IDLE_FIRMWARE,
  interopTest,
  lastJsonLine,
  withWorkDir,
} from "./_interop.ts";
import { createTlsCredentials } from "../_helpers/tls_certs.ts";

/** The reply to `command`: its return value, or its error's desc. */
async function answer(
  qmp: QmpClient,
  command: string,
  args: Record<string, unknown>,
): Promise<unknown> {
  try {
    return { return: await qmp.execute(command, args as never) };
  } catch (error) {
    if (!(error instanceof QmpError)) throw error;
    return { class: error.class, desc: error.desc };
  }
}

interopTest(
  "object-add and object-del of TLS objects answer as QEMU 7.2",
  async () => {
    await withWorkDir(async (dir) => {
      await using creds = await createTlsCredentials();
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      await using qemu = await startQemu({ firmware });
      const monitor = new MigrationMonitor({
        guest: new SimulatedGuest({ ramBytes: 1 << 20 }),
      });
      const [near, far] = createMemoryTransportPair();
      const served = monitor.handle(far);
      const ours = await QmpClient.connect(near);
      const x509 = { "qom-type": "tls-creds-x509", dir: creds.dir };
      const requests: [string, Record<string, unknown>][] = [
        ["object-add", { "qom-type": "tls-creds-x509" }],
        ["object-add", { id: "x" }],
        ["object-add", { ...x509, id: "c", endpoint: "sideways" }],
        ["object-add", { ...x509, id: "c", "verify-peer": "yes" }],
        ["object-add", { ...x509, id: "c", policy: "deny" }],
        ["object-add", { "qom-type": "tls-creds-x509", id: "c" }],
        ["object-add", { ...x509, id: "c", dir: `${dir}/missing` }],
        ["object-add", { ...x509, id: "9c" }],
        ["object-add", { ...x509, id: "c", endpoint: "server" }],
        ["object-add", { ...x509, id: "c" }],
        ["object-add", { "qom-type": "authz-list", id: "a", policy: "maybe" }],
        ["object-add", {
          "qom-type": "authz-list",
          id: "a",
          rules: [{ match: "CN=x", policy: "allow", format: "regex" }],
        }],
        ["object-add", {
          "qom-type": "authz-list",
          id: "a",
          rules: [{ policy: "allow" }],
        }],
        ["object-add", {
          "qom-type": "authz-list",
          id: "a",
          policy: "deny",
          rules: [{ match: creds.clientDn, policy: "allow", format: "exact" }],
        }],
        ["object-add", { "qom-type": "authz-list", id: "a" }],
        ["migrate-set-parameters", { "tls-creds": "c", "tls-authz": "a" }],
        ["object-del", { id: "a" }],
        ["object-del", { id: "a" }],
      ];
      try {
        for (const [command, args] of requests) {
          assert.deepEqual(
            await answer(ours, command, args),
            await answer(qemu.qmp, command, args),
            `${command} ${JSON.stringify(args)}`,
          );
        }
      } finally {
        await ours.close();
        await served;
        await monitor.close();
      }
    });
  },
);

interopTest(
  "a QMP migrate with tls-creds runs over TLS; an unknown id fails as in QEMU",
  async () => {
    await using creds = await createTlsCredentials();
    const monitor = new MigrationMonitor({
      guest: new SimulatedGuest({ ramBytes: 4 << 20 }),
    });
    const [near, far] = createMemoryTransportPair();
    const served = monitor.handle(far);
    const qmp = await QmpClient.connect(near);
    try {
      await qmp.execute("migrate-set-parameters", { "tls-creds": "nope" });
      await qmp.execute("migrate", { uri: "tcp:127.0.0.1:1" });
      const failed = await waitForStatus(qmp, "failed", 10_000);
      assert.equal(failed["error-desc"], "No TLS credentials with id 'nope'");

      await qmp.execute("object-add", {
        "qom-type": "tls-creds-x509",
        id: "tls0",
        dir: creds.dir,
        endpoint: "client",
      });
      await qmp.execute("migrate-set-parameters", {
        "tls-creds": "tls0",
        "tls-hostname": "localhost",
      });
      const port = freeLoopbackPort();
      const io = captureIo();
      const incoming = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--json",
        "--tls-creds",
        creds.dir,
        "--tls-authz",
        creds.clientDn,
      ], io);
      await io.waitForErr(/waiting for a migration/);
      await qmp.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
      assert.equal(await incoming, 0, io.err);
      assert.equal(lastJsonLine(io.out).status, "completed");
      await waitForStatus(qmp, "completed", 30_000);
    } finally {
      await qmp.close();
      await served;
      await monitor.close();
    }
  },
);

interopTest(
  "run --incoming with --tls-creds and --tls-authz receives a TLS migration",
  async () => {
    await using creds = await createTlsCredentials();
    const io = captureIo();
    const run = main([
      "run",
      "--incoming",
      "tcp:127.0.0.1:0",
      "--qmp",
      "tcp:127.0.0.1:0",
      "--tls-creds",
      creds.dir,
      "--tls-authz",
      creds.clientDn,
    ], io);
    const [, qmpAddress] = await io.waitForErr(/QMP monitor at (\S+)/);
    const [, address] = await io.waitForErr(/waiting for a migration at (\S+)/);
    const source = captureIo();
    const code = await main([
      "migrate",
      address!,
      "--ram",
      "4MiB",
      "--json",
      "--tls-creds",
      creds.dir,
    ], source);
    assert.equal(code, 0, source.err);
    const qmp = await QmpClient.connect(qmpAddress!);
    try {
      const parameters = await qmp.execute<Record<string, unknown>>(
        "query-migrate-parameters",
      );
      assert.equal(parameters["tls-creds"], "tls0");
      assert.equal(parameters["tls-authz"], "auth0");
      await waitForStatus(qmp, "completed", 30_000);
      await qmp.execute("quit");
    } finally {
      await qmp.close();
    }
    assert.equal(await run, 0, io.err);
  },
);
