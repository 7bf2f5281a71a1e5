/**
 * `livemig incoming` as a separate process: what it does when postcopy
 * pauses without --recover, and how it answers Ctrl-C and SIGTERM.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  type MigrationInfo,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";
import { delay } from "../_helpers/delay.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const MIB = 1024 * 1024;

interface Incoming {
  child: Deno.ChildProcess;
  /** Everything written to stderr so far. */
  err(): string;
  /** Resolves with the first match of `pattern` in stderr. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>;
  /** The exit code, stdout, and its last line as JSON (if any). */
  finish(): Promise<
    { code: number; out: string; json: Record<string, unknown> }
  >;
  /** Whether the process has ended. */
  ended(): boolean;
}

function spawnIncoming(args: string[]): Incoming {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", CLI, "incoming", ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).spawn();
  let err = "";
  let ended = false;
  const changed = new EventTarget();
  const reading = (async () => {
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      err += text;
      changed.dispatchEvent(new Event("change"));
    }
  })();
  const stdout = new Response(child.stdout).text();
  child.status.then(() => {
    ended = true;
    changed.dispatchEvent(new Event("change"));
  });
  return {
    child,
    err: () => err,
    ended: () => ended,
    waitFor(pattern) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(err);
          if (match) {
            changed.removeEventListener("change", check);
            resolve(match);
          } else if (ended) {
            changed.removeEventListener("change", check);
            reject(new Error(`incoming ended before ${pattern}:\n${err}`));
          }
        };
        changed.addEventListener("change", check);
        check();
      });
    },
    async finish() {
      const [status, out] = await Promise.all([child.status, stdout, reading]);
      const last = out.trimEnd().split("\n").at(-1) ?? "";
      return {
        code: status.code,
        out,
        json: last.startsWith("{") ? JSON.parse(last) : {},
      };
    },
  };
}

/** Starts a postcopy migration into `incoming` and pauses it at once. */
async function pausedPostcopy(incoming: Incoming) {
  const [, address] = await incoming.waitFor(
    /waiting for a migration at (tcp:\S+)/,
  );
  const guest = new SimulatedGuest({
    ramBytes: 16 * MIB,
    prefill: true,
    running: false,
  });
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    parameters: { "max-postcopy-bandwidth": 1 * MIB },
    postcopyAfterPasses: 0,
  });
  source.migrate(await connectTransport(address!)).catch(() => {});
  await incoming.waitFor(/livemig: postcopy-active\n/);
  source.pause(); // the connection goes: both ends pause
  await incoming.waitFor(/Ctrl-C twice within 5 s, or SIGTERM, quits/);
  return source;
}

Deno.test("cli incoming stays in postcopy-paused without --recover, says what to do, and quits at a second Ctrl-C", async () => {
  const incoming = spawnIncoming([
    "tcp:127.0.0.1:0",
    "-c",
    "postcopy-ram=on",
    "--json",
  ]);
  await pausedPostcopy(incoming);
  assert.match(
    incoming.err(),
    /livemig: postcopy paused: .*\nlivemig: the guest runs here, but \d+ of its pages are still on the source: neither end may give it up, so this end waits \(to heal a cut connection, start both ends with --recover URI; guests under livemig run --qmp heal with migrate-recover\)\n/,
  );
  await delay(500);
  assert.equal(incoming.ended(), false, "a paused destination stays alive");
  incoming.child.kill("SIGINT");
  await incoming.waitFor(
    /the guest is in postcopy-paused and \d+ of its pages are still on the source: quitting now loses it; press Ctrl-C again within 5 s/,
  );
  await delay(300);
  assert.equal(incoming.ended(), false, "one Ctrl-C does not quit");
  incoming.child.kill("SIGINT");
  const { code, json } = await incoming.finish();
  assert.equal(code, 1);
  assert.equal(json.status, "postcopy-paused");
  assert.match(
    incoming.err(),
    /livemig: Cannot complete the incoming migration: quit on SIGINT; the guest is lost in postcopy-paused \(\d+ pages never arrived\)\n$/,
  );
});

Deno.test("cli incoming in postcopy-paused quits at SIGTERM with status postcopy-paused", async () => {
  const incoming = spawnIncoming([
    "tcp:127.0.0.1:0",
    "-c",
    "postcopy-ram=on",
    "--json",
  ]);
  await pausedPostcopy(incoming);
  incoming.child.kill("SIGTERM");
  const { code, json } = await incoming.finish();
  assert.equal(code, 1);
  assert.equal(json.status, "postcopy-paused");
  assert.match(incoming.err(), /quit on SIGTERM; the guest is lost/);
});

Deno.test("cli incoming fails at Ctrl-C while it waits for a source, and says so", async () => {
  const incoming = spawnIncoming(["tcp:127.0.0.1:0", "--json"]);
  await incoming.waitFor(/waiting for a migration at/);
  incoming.child.kill("SIGINT");
  const { code, json } = await incoming.finish();
  assert.equal(code, 1);
  assert.equal(json.status, "failed");
  assert.equal(
    json["error-desc"],
    "interrupted by SIGINT while waiting for a source",
  );
  assert.match(
    incoming.err(),
    /livemig: Cannot complete the incoming migration: interrupted by SIGINT while waiting for a source\n$/,
  );
});

/**
 * Migrates a 4 MiB prefilled guest into `incoming` in postcopy from the
 * first page on (each page arrives after the switch).
 *
 * @returns The source's guest, stopped.
 */
async function migrateInPostcopy(incoming: Incoming): Promise<SimulatedGuest> {
  const [, address] = await incoming.waitFor(
    /waiting for a migration at (tcp:\S+)/,
  );
  const guest = new SimulatedGuest({ ramBytes: 4 * MIB, prefill: true });
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    postcopyAfterPasses: 0,
  });
  let info: MigrationInfo;
  try {
    info = await source.migrate(await connectTransport(address!));
  } finally {
    guest.pause();
  }
  assert.equal(info.status, "completed");
  return guest;
}

Deno.test("cli incoming's summary says how postcopy went", async () => {
  const incoming = spawnIncoming(["tcp:127.0.0.1:0", "-c", "postcopy-ram=on"]);
  await migrateInPostcopy(incoming);
  const { code, out } = await incoming.finish();
  assert.equal(code, 0, incoming.err());
  assert.match(
    out,
    /^completed: 4\.0 MiB of RAM from a livemig source, \d+ zero and \d+ normal pages; postcopy: \d+ pages requested, blocktime \d+ ms\n$/,
  );
});

Deno.test("cli incoming and migrate refuse multifd up front without --allow-read, naming it", async () => {
  for (const command of ["incoming", "migrate"]) {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        CLI,
        command,
        "tcp:127.0.0.1:9",
        "-c",
        "multifd=on",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(code, 2, command);
    assert.match(
      new TextDecoder().decode(stderr),
      /^livemig: multifd needs --allow-read: its channels run in Workers loaded from \S+\/lib\/migration\//,
    );
  }
});

Deno.test("cli incoming in postcopy needs no read permission: background pages are placed by a worker all the same", async () => {
  // spawnIncoming grants --allow-net only: the placer's worker must start
  // without reading a module file, and place the pages as they were.
  const incoming = spawnIncoming([
    "tcp:127.0.0.1:0",
    "-c",
    "postcopy-ram=on",
    "--json",
  ]);
  const guest = await migrateInPostcopy(incoming);
  const { code, json } = await incoming.finish();
  assert.equal(code, 0, incoming.err());
  assert.deepEqual(json["ram-sha256-received"], await ramSha256(guest.memory));
});
