/**
 * The file name a RAM block is written to: its idstr with every character
 * outside `[A-Za-z0-9._-]` replaced by `_`, plus `.bin`.
 *
 * @example Usage
 * ```ts
 * import { ramBlockFileName } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ramBlockFileName("pc.ram"), "pc.ram.bin");
 * assert.equal(ramBlockFileName("/rom@etc/acpi/tables"), "_rom_etc_acpi_tables.bin");
 * ```
 *
 * @param idstr The block idstr.
 * @returns The file name.
 */
export function ramBlockFileName(idstr: string): string {
  return `${idstr.replace(/[^A-Za-z0-9._-]/g, "_")}.bin`;
}
