/**
 * The package as others get it: `deno publish --dry-run` passes and ships
 * only the library, and the README's "another project" example runs from a
 * directory outside the repository.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const TIMEOUT_MS = 120_000;

async function run(
  args: string[],
  cwd: string | URL,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS);
  try {
    const { code, stdout, stderr } = await child.output();
    const text = new TextDecoder();
    return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** The first fenced block of `language` after `heading` in README.md. */
function readmeBlock(
  readme: string,
  heading: string,
  language: string,
): string {
  const start = readme.indexOf(heading);
  assert.ok(start >= 0, `README.md has a "${heading}" section`);
  const fence = "```" + language + "\n";
  const open = readme.indexOf(fence, start);
  assert.ok(open >= 0, `"${heading}" has a ${language} block`);
  const close = readme.indexOf("\n```", open + fence.length);
  return readme.slice(open + fence.length, close + 1);
}

Deno.test("deno publish --dry-run passes and ships only the library", async () => {
  const { code, stdout, stderr } = await run(
    ["publish", "--dry-run", "--allow-dirty"],
    ROOT,
  );
  const output = stdout + stderr;
  assert.equal(code, 0, output);
  assert.match(output, /Dry run complete/);
  assert.doesNotMatch(output, /warning/i, output);
  const files = [...output.matchAll(/file:\/\/\S+/g)].map((m) =>
    m[0].slice(ROOT.href.length)
  );
  for (const needed of ["mod.ts", "cli.ts", "LICENSE", "deno.json"]) {
    assert.ok(files.includes(needed), `the package holds ${needed}`);
  }
  assert.ok(files.some((f) => f.startsWith("lib/")), "the package holds lib/");
  const stray = files.filter((f) =>
    f.startsWith("tests/") || f.startsWith("fixtures/") || f.startsWith(".ci/")
  );
  assert.deepEqual(stray, [], "tests, fixtures and CI stay out");
});

Deno.test("deno.json declares the license the LICENSE file holds", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  );
  const license = await Deno.readTextFile(new URL("LICENSE", ROOT));
  assert.equal(config.license, "MIT");
  assert.match(license, /^MIT License/);
});

Deno.test("the README's example runs from a project outside the repository", async () => {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const heading = "### Using livemig from another project";
  const config = JSON.parse(readmeBlock(readme, heading, "json"));
  const example = readmeBlock(readme, heading, "ts");
  const dir = await Deno.makeTempDir({ prefix: "livemig-user-" });
  try {
    // The README maps the package to a sibling checkout; point it at this one.
    config.imports["@livemig/livemig"] = new URL("mod.ts", ROOT).href;
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify(config));
    await Deno.writeTextFile(`${dir}/main.ts`, example);
    const { code, stdout, stderr } = await run(["run", "main.ts"], dir);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^completed \d+ ms downtime\nRAM identical\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
