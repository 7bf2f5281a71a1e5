import {
  describeError,
  escapeUntrustedText,
  type GuestMemory,
  ramBlockFileName,
} from "../../mod.ts";

/**
 * Writes each RAM block of `memory` to `DIR/<name>.bin` (`incoming
 * --ram-dump DIR`), creating DIR when needed. A failure names the
 * directory or file it concerns and the system's error.
 *
 * @example Usage
 * ```ts
 * import { dumpRam } from "./dump_ram.ts";
 * import { GuestMemory } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 4096 }]);
 * const dir = await Deno.makeTempDir();
 * assert.deepEqual(await dumpRam(memory, `${dir}/ram`), [`${dir}/ram/pc.ram.bin`]);
 * await Deno.writeTextFile(`${dir}/file`, "");
 * await assert.rejects(dumpRam(memory, `${dir}/file`), /^Error: Cannot create the RAM dump directory ".*\/file": /);
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param memory The guest's RAM.
 * @param dir The directory.
 * @returns The files written.
 * @throws {Error} "Cannot create the RAM dump directory …" or "Cannot
 *   write RAM block … to …", with the system error as its cause.
 */
export async function dumpRam(
  memory: GuestMemory,
  dir: string,
): Promise<string[]> {
  try {
    await Deno.mkdir(dir, { recursive: true });
  } catch (error) {
    throw new Error(
      `Cannot create the RAM dump directory "${dir}": ${describeError(error)}`,
      { cause: error },
    );
  }
  const written: string[] = [];
  for (const block of memory.blocks) {
    const path = `${dir}/${ramBlockFileName(block.idstr)}`;
    try {
      await Deno.writeFile(path, block.bytes);
    } catch (error) {
      throw new Error(
        `Cannot write RAM block "${
          escapeUntrustedText(block.idstr)
        }" to "${path}": ${describeError(error)}`,
        { cause: error },
      );
    }
    written.push(path);
  }
  return written;
}
