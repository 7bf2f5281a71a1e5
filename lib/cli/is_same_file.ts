/**
 * Whether `a` and `b` name the same file (the same device and inode, so
 * also through a symbolic or hard link); `false` when `b` does not exist.
 *
 * @example Usage
 * ```ts
 * import { isSameFile } from "./is_same_file.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/a`, "");
 * await Deno.symlink(`${dir}/a`, `${dir}/link`);
 * assert.equal(await isSameFile(`${dir}/a`, `${dir}/./link`), true);
 * assert.equal(await isSameFile(`${dir}/a`, `${dir}/b`), false);
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param a A file that exists.
 * @param b Another path.
 * @returns Whether both name one file.
 */
export async function isSameFile(a: string, b: string): Promise<boolean> {
  let other: Deno.FileInfo;
  try {
    other = await Deno.stat(b);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
  const info = await Deno.stat(a);
  if (info.ino !== null && info.dev === other.dev) {
    return info.ino === other.ino;
  }
  return await Deno.realPath(a) === await Deno.realPath(b);
}
