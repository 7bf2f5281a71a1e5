/**
 * Checks the layering of lib/: a file imports only from its own folder or
 * from a lower rank, and only lib/transport/ touches `Deno.*`.
 */
import assert from "node:assert/strict";

const RANK: Record<string, number> = {
  "errors.ts": 0,
  bytes: 0,
  streams: 1,
  transport: 2,
  guest: 2,
  ram: 3,
  wire: 4,
  postcopy: 4,
  // A mapped-ram file is a stream with its RAM laid out at fixed offsets:
  // its codec builds on lib/wire/.
  "mapped_ram": 5,
  // Siblings: the migration engine never goes through the offline tools.
  inspect: 6,
  migration: 6,
  qmp: 7,
};
const LIB = new URL("../lib/", import.meta.url);

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

/** Drops block and line comments (JSDoc examples import the package). */
function withoutComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
}

Deno.test("lib/ has only known top-level folders", () => {
  for (const file of files) {
    const top = file.split("/")[0]!;
    assert.ok(top in RANK, `lib/${file} is in an unranked folder "${top}"`);
  }
});

for (const file of files) {
  Deno.test(`lib/${file} imports only from its folder or lower layers`, () => {
    const code = withoutComments(Deno.readTextFileSync(new URL(file, LIB)));
    const from = file.split("/")[0]!;
    for (
      const [, fromSpecifier, bareSpecifier] of code.matchAll(
        /^\s*(?:import|export)\b[^;]*?from\s+"([^"]+)";|^\s*import\s+"([^"]+)";/gm,
      )
    ) {
      const specifier = fromSpecifier ?? bareSpecifier;
      if (!specifier!.startsWith(".")) {
        assert.ok(
          specifier!.startsWith("node:") === false,
          `lib/${file} imports "${specifier}": lib/ uses the web platform only`,
        );
        assert.fail(`lib/${file} imports the package "${specifier}"`);
      }
      const target = new URL(specifier!, new URL(file, LIB)).href;
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

for (const file of files) {
  if (file.startsWith("transport/")) continue;
  Deno.test(`lib/${file} does not use Deno.*`, () => {
    const code = withoutComments(Deno.readTextFileSync(new URL(file, LIB)));
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
    const code = withoutComments(Deno.readTextFileSync(new URL(file, LIB)));
    assert.doesNotMatch(code, /\bconsole\./, `lib/${file} uses console`);
  }
});

Deno.test("mod.ts exports every public lib file and nothing else", () => {
  const text = Deno.readTextFileSync(new URL("../mod.ts", import.meta.url));
  const exported = [...text.matchAll(/export \* from "\.\/lib\/([^"]+)";/g)]
    .map((m) => m[1]);
  const publicFiles = files.filter((f) =>
    !f.split("/").at(-1)!.startsWith("_")
  );
  assert.deepEqual(exported, [...exported].sort(), "mod.ts exports are sorted");
  assert.deepEqual([...exported].sort(), publicFiles);
});
