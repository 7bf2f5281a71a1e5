import { basename, dirname, join } from "node:path";

/**
 * Writes the file at `path` all at once: `write` fills a temporary file in
 * the same directory, which then replaces `path` by a rename. If `write`
 * fails, the temporary file is removed and whatever `path` held before is
 * left untouched. The new file gets the mode of the file it replaces, or
 * the usual one for a new file (0666 less the umask).
 *
 * @example Usage
 * ```ts
 * import { replaceFile } from "./replace_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/out`, "before");
 * await assert.rejects(replaceFile(`${dir}/out`, async (temp) => {
 *   await Deno.writeTextFile(temp, "half");
 *   throw new Error("disk full");
 * }), /disk full/);
 * assert.equal(await Deno.readTextFile(`${dir}/out`), "before");
 * await replaceFile(`${dir}/out`, (temp) => Deno.writeTextFile(temp, "after"));
 * assert.equal(await Deno.readTextFile(`${dir}/out`), "after");
 * assert.deepEqual(await Array.fromAsync(Deno.readDir(dir), (e) => e.name), ["out"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @typeParam T What `write` resolves to.
 * @param path The file to write.
 * @param write Writes the content to the temporary file it is given.
 * @returns What `write` resolved to.
 */
export async function replaceFile<T>(
  path: string,
  write: (temp: string) => Promise<T>,
): Promise<T> {
  const mode = await existingMode(path);
  const temp = join(
    dirname(path),
    `.${basename(path)}.${crypto.randomUUID().slice(0, 8)}.tmp`,
  );
  // Created as open(2) creates files (0666 less the umask), never over
  // another file.
  (await Deno.open(temp, { write: true, createNew: true, mode: 0o666 }))
    .close();
  try {
    const result = await write(temp);
    if (mode !== undefined) await Deno.chmod(temp, mode);
    await Deno.rename(temp, path);
    return result;
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/** The mode of the file at `path`; none if there is none (or off Unix). */
async function existingMode(path: string): Promise<number | undefined> {
  try {
    const mode = (await Deno.stat(path)).mode;
    return mode === null ? undefined : mode & 0o7777;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    return undefined;
  }
}
