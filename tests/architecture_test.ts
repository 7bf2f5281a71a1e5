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
  inspect: 6,
  migration: 7,
};
const LIB = new URL("../lib/", import.meta.url);

/**
 * The few Node built-ins a lib file may import, with the reason: lib/ is
 * otherwise the web platform only.
 */
const NODE_BUILTINS: Record<string, string[]> = {
  // WebCrypto has no incremental SHA-256: hashing GiBs of guest RAM in one
  // crypto.subtle.digest call is about five times slower.
  "migration/ram_sha256.ts": ["node:crypto"],
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
      if (NODE_BUILTINS[file]?.includes(specifier!)) continue;
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
