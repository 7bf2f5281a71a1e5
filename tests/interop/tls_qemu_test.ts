/**
 * TLS between real QEMU 7.2 and livemig, with QEMU's own `tls-creds-x509`
 * and `authz-list` objects: QEMU source into `livemig incoming`, and QEMU
 * through `livemig proxy` (TLS on both sides, or terminated at the proxy)
 * into a QEMU destination; plus QEMU's client refused by livemig's authz.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import {
  freeLoopbackPort,
  incomingPort,
  type MigrationInfo,
  type QemuInstance,
  startQemu,
  waitForRunState,
  waitForStatus,
  zeroLegacyWindow,
} from "../_helpers/qemu.ts";
import {
  assertSameRam,
  captureIo,
  firmwareIn,
  guestRam,
  IDLE_FIRMWARE,
  interopTest,
  lastJsonLine,
  RAM_MIB,
  startMigration,
  startSource,
  withWorkDir,
} from "./_interop.ts";
import { createTlsCredentials } from "../_helpers/tls_certs.ts";

/**
 * Gives `vm` QEMU's TLS objects and points its migration at them: the
 * credentials as `tls0`, and for a server an authz list `auth0` allowing
 * only `allow`.
 */
async function useTls(
  vm: QemuInstance,
  dir: string,
  options: { endpoint: "client" | "server"; allow?: string },
): Promise<void> {
  await vm.qmp.execute("object-add", {
    "qom-type": "tls-creds-x509",
    id: "tls0",
    dir,
    endpoint: options.endpoint,
    "verify-peer": true,
  });
  const parameters: Record<string, string> = { "tls-creds": "tls0" };
  if (options.allow !== undefined) {
    await vm.qmp.execute("object-add", {
      "qom-type": "authz-list",
      id: "auth0",
      policy: "deny",
      rules: [{ match: options.allow, policy: "allow", format: "exact" }],
    });
    parameters["tls-authz"] = "auth0";
  }
  if (options.endpoint === "client") parameters["tls-hostname"] = "localhost";
  await vm.qmp.execute("migrate-set-parameters", parameters);
}

interopTest(
  "QEMU 7.2 migrates over TLS into livemig incoming, client certificate checked by authz",
  async () => {
    await withWorkDir(async (dir) => {
      await using creds = await createTlsCredentials();
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      await using source = await startSource(firmware);
      await useTls(source, creds.dir, { endpoint: "client" });
      const port = freeLoopbackPort();
      const io = captureIo();
      const dumpDir = `${dir}/dump`;
      const run = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--ram-dump",
        dumpDir,
        "--json",
        "--tls-creds",
        creds.dir,
        "--tls-authz",
        creds.clientDn,
      ], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      assert.equal(await run, 0, io.err);
      const info = lastJsonLine<MigrationInfo>(io.out);
      assert.equal(info.status, "completed");
      await waitForStatus(source.qmp, "completed", 60_000);
      await waitForRunState(source.qmp, "postmigrate", 10_000);
      assertSameRam(
        zeroLegacyWindow(await Deno.readFile(`${dumpDir}/pc.ram.bin`)),
        await guestRam(source),
        "pc.ram",
      );
    });
  },
);

interopTest(
  "livemig incoming refuses a QEMU 7.2 source whose DN is not in --tls-authz",
  async () => {
    await withWorkDir(async (dir) => {
      await using creds = await createTlsCredentials({ clientCn: "intruder" });
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      // With a return path QEMU waits for the destination's answer, so a
      // refused connection fails it even when its whole (small) stream
      // fitted in the socket buffers.
      await using source = await startSource(firmware, {
        capabilities: ["return-path"],
      });
      await useTls(source, creds.dir, { endpoint: "client" });
      const port = freeLoopbackPort();
      const io = captureIo();
      const run = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--json",
        "--tls-creds",
        creds.dir,
        "--tls-authz",
        "C=GB,O=livemig,CN=source.example",
      ], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      assert.equal(await run, 1);
      assert.match(
        io.err,
        /TLS x509 authz check for C=GB,O=livemig,CN=intruder is denied/,
      );
      const info = lastJsonLine<MigrationInfo>(io.out);
      assert.equal(info.status, "failed");
      assert.equal(info.ram?.transferred ?? 0, 0);
      const failed = await waitForStatus(source.qmp, "failed", 30_000);
      assert.ok(failed["error-desc"], JSON.stringify(failed));
      // The source keeps its guest.
      const state = await source.qmp.execute<{ status: string }>(
        "query-status",
      );
      assert.equal(state.status, "running");
    });
  },
);

interopTest(
  "livemig incoming with TLS names a plaintext QEMU 7.2 source, which fails",
  async () => {
    await withWorkDir(async (dir) => {
      await using creds = await createTlsCredentials();
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      await using source = await startSource(firmware, {
        capabilities: ["return-path"],
      });
      const port = freeLoopbackPort();
      const io = captureIo();
      const run = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--json",
        "--tls-creds",
        creds.dir,
      ], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      assert.equal(await run, 1);
      assert.match(io.err, /the peer did not speak TLS \(a plaintext peer\?\)/);
      const info = lastJsonLine<MigrationInfo>(io.out);
      assert.equal(info.status, "failed");
      assert.equal(info.ram?.transferred ?? 0, 0);
      await waitForStatus(source.qmp, "failed", 30_000);
    });
  },
);

/** A QEMU destination waiting at a TLS (or plain) address, paused. */
async function startDestination(
  firmware: string,
  tls: { dir: string; allow: string } | undefined,
): Promise<{ destination: QemuInstance; target: string }> {
  const destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: "defer",
  });
  try {
    if (tls) {
      await useTls(destination, tls.dir, {
        endpoint: "server",
        allow: tls.allow,
      });
    }
    await destination.qmp.execute("migrate-incoming", {
      uri: "tcp:127.0.0.1:0",
    });
    const port = await incomingPort(destination.qmp);
    return { destination, target: `tcp:127.0.0.1:${port}` };
  } catch (error) {
    await destination.stop();
    throw error;
  }
}

/** Runs QEMU → livemig proxy → QEMU with TLS as `proxyArgs` and `sides` say. */
async function proxied(
  sides: { source: boolean; destination: boolean },
  proxyArgs: (dir: string) => string[],
): Promise<void> {
  await withWorkDir(async (dir) => {
    await using creds = await createTlsCredentials();
    const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
    const { destination: vm, target } = await startDestination(
      firmware,
      sides.destination ? { dir: creds.dir, allow: creds.clientDn } : undefined,
    );
    await using destination = vm;
    await using source = await startSource(firmware);
    if (sides.source) {
      await useTls(source, creds.dir, { endpoint: "client" });
    }
    const io = captureIo();
    const run = main([
      "proxy",
      "tcp:127.0.0.1:0",
      target,
      "--json",
      ...proxyArgs(creds.dir),
    ], io);
    const [, address] = await io.waitForErr(
      /waiting for a migration at (\S+),/,
    );
    await startMigration(source, address!);
    assert.equal(await run, 0, io.err);
    assert.equal(lastJsonLine<{ status: string }>(io.out).status, "completed");
    await waitForStatus(source.qmp, "completed", 60_000);
    await waitForRunState(source.qmp, "postmigrate", 10_000);
    await waitForStatus(destination.qmp, "completed", 60_000);
    assertSameRam(
      await guestRam(destination),
      await guestRam(source),
      "destination pc.ram",
    );
  });
}

interopTest(
  "QEMU 7.2 → livemig proxy → QEMU 7.2 with TLS on both sides",
  async () => {
    await proxied(
      { source: true, destination: true },
      (dir) => [
        "--tls-creds",
        dir,
        "--tls-hostname",
        "localhost",
        "--tls-authz",
        "C=GB,O=livemig,CN=source.example",
      ],
    );
  },
);

interopTest(
  "QEMU 7.2 → livemig proxy → QEMU 7.2 with TLS terminated at the proxy",
  async () => {
    await proxied(
      { source: true, destination: false },
      (dir) => ["--listen-tls-creds", dir],
    );
    await proxied(
      { source: false, destination: true },
      (dir) => ["--target-tls-creds", dir],
    );
  },
);
