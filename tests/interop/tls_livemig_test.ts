/**
 * livemig to livemig over TLS, as two CLI processes: the happy path with
 * client certificates and authz, and each refusal with the cause named on
 * both ends and no guest data loaded.
 */

import assert from "node:assert/strict";
import { finishCli, spawnCli, waitForLine } from "../_helpers/cli_process.ts";
import { createTlsCredentials, hasOpenssl } from "../_helpers/tls_certs.ts";

const ignore = !(await hasOpenssl());

/** Runs incoming then migrate with the given extra flags; both results. */
async function migrate(incomingFlags: string[], migrateFlags: string[]) {
  const incoming = spawnCli([
    "incoming",
    "tcp:127.0.0.1:0",
    "--json",
    "--idle-timeout",
    "10s",
    ...incomingFlags,
  ]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const source = spawnCli([
    "migrate",
    address!,
    "--ram",
    "8MiB",
    "--prefill",
    "--json",
    ...migrateFlags,
  ]);
  const [s, d] = await Promise.all([finishCli(source), finishCli(incoming)]);
  return { source: s, destination: d };
}

Deno.test({
  name: "cli migrate to incoming over TLS with a client certificate and authz",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const { source, destination } = await migrate(
      ["--tls-creds", creds.dir, "--tls-authz", creds.clientDn],
      ["--tls-creds", creds.dir, "--tls-hostname", "localhost"],
    );
    assert.equal(source.code, 0, source.stderr);
    assert.equal(destination.code, 0, destination.stderr);
    assert.equal(source.json.status, "completed");
    assert.equal(destination.json.status, "completed");
    assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
  },
});

Deno.test({
  name:
    "cli migrate to incoming over TLS with multifd: every channel is encrypted",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const multifd = ["-c", "multifd=on", "-p", "multifd-channels=3"];
    const { source, destination } = await migrate(
      ["--tls-creds", creds.dir, "--tls-authz", creds.clientDn, ...multifd],
      ["--tls-creds", creds.dir, "--tls-hostname", "localhost", ...multifd],
    );
    assert.equal(source.code, 0, source.stderr);
    assert.equal(destination.code, 0, destination.stderr);
    assert.equal(destination.json.status, "completed");
    const ram = source.json.ram as Record<string, number>;
    assert.ok(ram["multifd-bytes"]! > 0, JSON.stringify(ram));
    assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
  },
});

/** Asserts both ends failed, named `cause` where given, loaded nothing. */
function assertRefused(
  result: Awaited<ReturnType<typeof migrate>>,
  causes: { source?: RegExp; destination?: RegExp },
): void {
  const { source, destination } = result;
  assert.equal(source.code, 1, source.stderr);
  assert.equal(destination.code, 1, destination.stderr);
  // A source whose connection fails before the migration starts stays
  // "none", as for a refused plain connection.
  assert.ok(
    source.json.status === "failed" || source.json.status === "none",
    source.stderr,
  );
  assert.equal(destination.json.status, "failed");
  if (causes.source) assert.match(source.stderr, causes.source);
  if (causes.destination) assert.match(destination.stderr, causes.destination);
  // No guest data got through: the destination loaded no RAM.
  const ram = destination.json.ram as Record<string, number> | undefined;
  assert.ok((ram?.transferred ?? 0) === 0, JSON.stringify(destination.json));
}

Deno.test({
  name:
    "cli TLS refuses a client DN not in --tls-authz, named on the destination",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials({ clientCn: "intruder" });
    assertRefused(
      await migrate(
        ["--tls-creds", creds.dir, "--tls-authz", "C=GB,O=livemig,CN=trusted"],
        ["--tls-creds", creds.dir],
      ),
      {
        destination:
          /TLS x509 authz check for C=GB,O=livemig,CN=intruder is denied/,
      },
    );
  },
});

Deno.test({
  name: "cli TLS refuses a destination certificate from another CA",
  ignore,
  async fn() {
    await using ours = await createTlsCredentials();
    await using theirs = await createTlsCredentials({ caName: "other CA" });
    assertRefused(
      await migrate(["--tls-creds", theirs.dir], ["--tls-creds", ours.dir]),
      {
        source: /not signed by the CA in .*ca-cert\.pem/,
        destination: /refused this side's certificate/,
      },
    );
  },
});

Deno.test({
  name: "cli TLS refuses a destination certificate for another host name",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    assertRefused(
      await migrate(["--tls-creds", creds.dir], [
        "--tls-creds",
        creds.dir,
        "--tls-hostname",
        "elsewhere.example",
      ]),
      { source: /tls-hostname/ },
    );
  },
});

Deno.test({
  name:
    "cli TLS with verify-peer refuses a source without a client certificate",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    await using bare = await createTlsCredentials({ noClientCert: true });
    await Deno.copyFile(`${creds.dir}/ca-cert.pem`, `${bare.dir}/ca-cert.pem`);
    assertRefused(
      await migrate(["--tls-creds", creds.dir], ["--tls-creds", bare.dir]),
      {
        destination: /the client sent no certificate and verify-peer is on/,
        source: /client certificate.*client-cert\.pem/,
      },
    );
  },
});

Deno.test({
  name: "cli plaintext source to a TLS destination, and the reverse, are named",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    assertRefused(await migrate(["--tls-creds", creds.dir], []), {
      destination: /did not speak TLS/,
    });
    assertRefused(await migrate([], ["--tls-creds", creds.dir]), {
      destination: /starts a TLS handshake/,
      source: /over TLS: the server closed the connection/,
    });
  },
});

Deno.test({
  name: "cli postcopy with its preempt channel runs over TLS, both connections",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const postcopy = ["-c", "postcopy-ram=on", "-c", "postcopy-preempt=on"];
    const { source, destination } = await migrate(
      ["--tls-creds", creds.dir, "--tls-authz", creds.clientDn, ...postcopy],
      [
        "--tls-creds",
        creds.dir,
        ...postcopy,
        "-p",
        "max-postcopy-bandwidth=8MiB/s",
        "--postcopy-after",
        "0",
      ],
    );
    assert.equal(source.code, 0, source.stderr);
    assert.equal(destination.code, 0, destination.stderr);
    assert.equal(destination.json.status, "completed");
    const ram = source.json.ram as Record<string, number>;
    assert.ok(ram["postcopy-bytes"]! > 0, JSON.stringify(source.json));
    assert.deepEqual(
      source.json["ram-sha256"],
      destination.json["ram-sha256-received"],
    );
  },
});
