/**
 * Checks the layering of lib/: a file imports only from its own folder or
 * from a lower rank, and only lib/transport/ touches `Deno.*`. The command
 * line sits on top: lib/cli/ is not the library (mod.ts does not export
 * it, nothing in the library imports it) and, like cli.ts, it uses the
 * library only through mod.ts, its public API.
 */
import assert from "node:assert/strict";

const RANK: Record<string, number> = {
  "errors.ts": 0,
  bytes: 0,
  streams: 1,
  transport: 2,
  guest: 2,
  ram: 3,
  // A WebAssembly program as a guest: its instrumenter and host loop.
  wasm: 3,
  wire: 4,
  postcopy: 4,
  // A mapped-ram file is a stream with its RAM laid out at fixed offsets:
  // its codec builds on lib/wire/.
  "mapped_ram": 5,
  // Siblings: the migration engine never goes through the offline tools.
  inspect: 6,
  migration: 6,
  qmp: 7,
  // The command line: the first client of the library.
  cli: 8,
};
/** The folders whose files may use `Deno.*`. */
const DENO_FOLDERS = ["transport", "cli"];
const ROOT = new URL("../", import.meta.url);
const LIB = new URL("lib/", ROOT);
const MOD = new URL("mod.ts", ROOT).href;
const CLI_LIB = new URL("cli/", LIB).href;

/**
 * The few Node built-ins a library file may import, with the reason: the
 * library is otherwise the web platform only.
 */
const NODE_BUILTINS: Record<string, string[]> = {
  // WebCrypto has no incremental SHA-256: hashing GiBs of guest RAM in one
  // crypto.subtle.digest call is about five times slower.
  "migration/ram_sha256.ts": ["node:crypto"],
  // A background snapshot hashes each page as it saves it, in RAM order,
  // so it keeps no page for the digest.
  "migration/_snapshot_page_stream.ts": ["node:crypto"],
  // multifd keeps one zlib or zstd stream per channel for the whole
  // migration, flushed at every packet: CompressionStream has no zstd and
  // no sync flush, and node:zlib's one-shot functions keep no state.
  "wire/_node_zlib_session.ts": ["node:zlib"],
  // TLS: Deno.listenTls cannot ask for or check a client certificate, nor
  // tell its distinguished name (lib/transport/tls.md); node:tls can.
  "transport/tls_transport.ts": ["node:tls", "node:crypto", "node:net"],
  "transport/_node_socket_conn.ts": ["node:net"],
};

function* libFiles(dir: URL, prefix = ""): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    const path = prefix + entry.name;
    if (entry.isDirectory) {
      yield* libFiles(new URL(`${entry.name}/`, dir), `${path}/`);
    } else if (path.endsWith(".ts")) {
      yield path;
    }
  }
}

const files = [...libFiles(LIB)].sort();
const cliFiles = files.filter((file) => file.startsWith("cli/"));
const libraryFiles = files.filter((file) => !file.startsWith("cli/"));

/** Drops block and line comments (JSDoc examples import the package). */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

/** The code of a file, without comments. */
function codeOf(url: URL): string {
  return withoutComments(Deno.readTextFileSync(url));
}

/** The specifiers a module imports or re-exports from. */
function importsOf(code: string): string[] {
  return [
    ...code.matchAll(
      /^\s*(?:import|export)\b[^;]*?from\s+"([^"]+)";|^\s*import\s+"([^"]+)";/gm,
    ),
  ].map(([, fromSpecifier, bareSpecifier]) =>
    (fromSpecifier ?? bareSpecifier)!
  );
}

Deno.test("lib/ has only known top-level folders", () => {
  for (const file of files) {
    const top = file.split("/")[0]!;
    assert.ok(top in RANK, `lib/${file} is in an unranked folder "${top}"`);
  }
});

for (const file of libraryFiles) {
  Deno.test(`lib/${file} imports only from its folder or lower layers`, () => {
    const from = file.split("/")[0]!;
    for (const specifier of importsOf(codeOf(new URL(file, LIB)))) {
      if (NODE_BUILTINS[file]?.includes(specifier)) continue;
      if (!specifier.startsWith(".")) {
        assert.ok(
          specifier.startsWith("node:") === false,
          `lib/${file} imports "${specifier}": lib/ uses the web platform only`,
        );
        assert.fail(`lib/${file} imports the package "${specifier}"`);
      }
      const target = new URL(specifier, new URL(file, LIB)).href;
      assert.ok(
        target.startsWith(LIB.href),
        `lib/${file} imports outside lib/: ${specifier}`,
      );
      const to = target.slice(LIB.href.length).split("/")[0]!;
      if (to === from) continue;
      assert.ok(
        RANK[to]! < RANK[from]!,
        `lib/${file} (rank ${RANK[from]}) must not import ${specifier} (rank ${
          RANK[to]
        })`,
      );
    }
  });
}

for (const file of cliFiles) {
  Deno.test(`lib/${file} imports only lib/cli/, mod.ts and node: built-ins`, () => {
    for (const specifier of importsOf(codeOf(new URL(file, LIB)))) {
      if (specifier.startsWith("node:")) continue;
      const target = new URL(specifier, new URL(file, LIB)).href;
      assert.ok(
        target === MOD || target.startsWith(CLI_LIB),
        `lib/${file} imports ${specifier}: the command line uses the library through mod.ts only`,
      );
    }
  });
}

for (const file of files) {
  if (DENO_FOLDERS.includes(file.split("/")[0]!)) continue;
  Deno.test(`lib/${file} does not use Deno.*`, () => {
    const code = codeOf(new URL(file, LIB));
    assert.doesNotMatch(code, /\bDeno\./, `lib/${file} must not use Deno.*`);
  });
}

Deno.test("lib/inspect/ is a leaf: nothing else in lib/ imports it", () => {
  for (const file of files) {
    if (file.startsWith("inspect/")) continue;
    const code = withoutComments(Deno.readTextFileSync(new URL(file, LIB)));
    for (const [, specifier] of code.matchAll(/from\s+"([^"]+)"/g)) {
      const target = new URL(specifier!, new URL(file, LIB)).href;
      assert.ok(
        !target.startsWith(new URL("inspect/", LIB).href),
        `lib/${file} imports ${specifier}: lib/inspect/ is for the command line and mod.ts only`,
      );
    }
  }
});

/** Every lib file `file` reaches through its imports, itself included. */
function importClosure(file: string): Set<string> {
  const seen = new Set<string>();
  const pending = [file];
  while (pending.length > 0) {
    const next = pending.pop()!;
    if (seen.has(next)) continue;
    seen.add(next);
    const code = withoutComments(Deno.readTextFileSync(new URL(next, LIB)));
    for (const [, specifier] of code.matchAll(/from\s+"(\.[^"]+)"/g)) {
      const target = new URL(specifier!, new URL(next, LIB)).href;
      if (target.startsWith(LIB.href)) {
        pending.push(target.slice(LIB.href.length));
      }
    }
  }
  return seen;
}

Deno.test("loading a mapped-ram file encodes no stream", () => {
  // The destination reads pages from their fixed offsets into the record
  // loader that a network stream feeds; nothing on that path may encode
  // the file as a stream again.
  const encoders = [
    "wire/migration_encoder.ts",
    "wire/migration_encoder_stream.ts",
    "mapped_ram/mapped_ram_encoder_stream.ts",
    "transport/memory_transport.ts",
  ];
  const reader = importClosure("mapped_ram/read_mapped_ram_records.ts");
  const destination = withoutComments(
    Deno.readTextFileSync(new URL("migration/destination_migration.ts", LIB)),
  );
  assert.match(destination, /read_mapped_ram_records\.ts"/);
  for (const encoder of encoders) {
    assert.ok(
      !reader.has(encoder),
      `lib/mapped_ram/read_mapped_ram_records.ts reaches lib/${encoder}`,
    );
    assert.ok(
      !destination.includes(encoder.split("/")[1]!),
      `lib/migration/destination_migration.ts imports lib/${encoder}`,
    );
  }
});

Deno.test("lib/ writes nothing to the console", () => {
  for (const file of files) {
    const code = codeOf(new URL(file, LIB));
    assert.doesNotMatch(code, /\bconsole\./, `lib/${file} uses console`);
  }
});

Deno.test("mod.ts exports every public library file and nothing else", () => {
  const text = Deno.readTextFileSync(new URL("mod.ts", ROOT));
  const exported = [...text.matchAll(/export \* from "\.\/lib\/([^"]+)";/g)]
    .map((m) => m[1]);
  const publicFiles = libraryFiles.filter((f) =>
    !f.split("/").at(-1)!.startsWith("_")
  );
  assert.deepEqual(exported, [...exported].sort(), "mod.ts exports are sorted");
  assert.deepEqual([...exported].sort(), publicFiles);
});

Deno.test("nothing outside lib/cli/ but cli.ts imports lib/cli/", () => {
  const importers = [
    ...libraryFiles.map((file) => new URL(file, LIB)),
    new URL("mod.ts", ROOT),
  ];
  for (const url of importers) {
    for (const specifier of importsOf(codeOf(url))) {
      if (!specifier.startsWith(".")) continue;
      assert.ok(
        !new URL(specifier, url).href.startsWith(CLI_LIB),
        `${
          url.href.slice(ROOT.href.length)
        } imports ${specifier}: lib/cli/ is the command line, not the library`,
      );
    }
  }
});

Deno.test("cli.ts imports only mod.ts and lib/cli/", () => {
  const cli = new URL("cli.ts", ROOT);
  const specifiers = importsOf(codeOf(cli));
  assert.ok(specifiers.length > 0);
  for (const specifier of specifiers) {
    const target = new URL(specifier, cli).href;
    assert.ok(
      target === MOD || target.startsWith(CLI_LIB),
      `cli.ts imports ${specifier}: it only dispatches to lib/cli/`,
    );
  }
});
