import assert from "node:assert/strict";
import { run } from "./_cli.ts";

const IDLE = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url);

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir), (entry) => entry.name))
    .sort();
}

Deno.test("cli convert refuses OUT that is IN, however it is named, with exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const input = `${dir}/in.bin`;
    await Deno.copyFile(IDLE, input);
    const before = await Deno.readFile(input);
    await Deno.symlink(input, `${dir}/link.bin`);
    await Deno.link(input, `${dir}/hard.bin`);
    for (
      const output of [
        input,
        `${dir}/./in.bin`,
        `${dir}/link.bin`,
        `${dir}/hard.bin`,
      ]
    ) {
      const { code, err } = await run([
        "convert",
        input,
        output,
        "--to",
        "mapped-ram",
      ]);
      assert.equal(code, 2, output);
      assert.match(err, /they are the same file/, output);
      assert.deepEqual(await Deno.readFile(input), before, output);
    }
    const back = await run(["convert", input, input, "--to", "stream"]);
    assert.equal(back.code, 2);
    assert.deepEqual(await Deno.readFile(input), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli convert that fails leaves an earlier OUT as it was", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const corrupt = await Deno.readFile(IDLE);
    corrupt[8] = 0x09; // where CONFIGURATION starts
    await Deno.writeFile(`${dir}/bad.bin`, corrupt);
    await Deno.writeTextFile(`${dir}/out.mr`, "earlier");
    const failed = await run([
      "convert",
      `${dir}/bad.bin`,
      `${dir}/out.mr`,
      "--to",
      "mapped-ram",
    ]);
    assert.equal(failed.code, 1);
    assert.match(failed.err, /offset 8/);
    assert.equal(await Deno.readTextFile(`${dir}/out.mr`), "earlier");
    assert.deepEqual(await names(dir), ["bad.bin", "out.mr"]);

    const made = await run([
      "convert",
      IDLE.pathname,
      `${dir}/cut.mr`,
      "--to",
      "mapped-ram",
    ]);
    assert.equal(made.code, 0, made.err);
    await Deno.truncate(`${dir}/cut.mr`, 4096);
    await Deno.writeTextFile(`${dir}/out.bin`, "earlier");
    const cut = await run([
      "convert",
      `${dir}/cut.mr`,
      `${dir}/out.bin`,
      "--to",
      "stream",
    ]);
    assert.equal(cut.code, 1);
    assert.equal(await Deno.readTextFile(`${dir}/out.bin`), "earlier");
    assert.deepEqual(await names(dir), [
      "bad.bin",
      "cut.mr",
      "out.bin",
      "out.mr",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli convert replaces an earlier OUT once it succeeds, keeping its mode", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/out.mr`, "earlier");
    await Deno.chmod(`${dir}/out.mr`, 0o640);
    const { code, err } = await run([
      "convert",
      IDLE.pathname,
      `${dir}/out.mr`,
      "--to",
      "mapped-ram",
    ]);
    assert.equal(code, 0, err);
    const analysed = await run(["analyze", `${dir}/out.mr`, "--json"]);
    assert.equal(JSON.parse(analysed.out).format, "mapped-ram");
    assert.equal((await Deno.stat(`${dir}/out.mr`)).mode! & 0o777, 0o640);
    assert.deepEqual(await names(dir), ["out.mr"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli convert gives a new OUT the mode any new file gets", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/plain`, "");
    const { code, err } = await run([
      "convert",
      IDLE.pathname,
      `${dir}/new.mr`,
      "--to",
      "mapped-ram",
    ]);
    assert.equal(code, 0, err);
    assert.equal(
      (await Deno.stat(`${dir}/new.mr`)).mode! & 0o777,
      (await Deno.stat(`${dir}/plain`)).mode! & 0o777,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
