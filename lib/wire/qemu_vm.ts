/**
 * The type bytes of QEMU's migration stream (`QEMU_VM_*` in QEMU's
 * `migration/savevm.c`), and its header.
 *
 * ```
 * be32 0x5145564d ("QEVM")  be32 3
 * 0x07 CONFIGURATION | 0x01 START | 0x02 PART | 0x03 END | 0x04 FULL
 * | 0x08 COMMAND | 0x00 EOF, then 0x06 VMDESCRIPTION
 * (0x05 SUBSECTION and 0x7e SECTION_FOOTER appear inside sections only)
 * ```
 *
 * @example Usage
 * ```ts
 * import { QEMU_VM, QEMU_VM_FILE_MAGIC } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(QEMU_VM.SECTION_FOOTER, 0x7e);
 * assert.equal(QEMU_VM_FILE_MAGIC, 0x5145564d);
 * ```
 */
export const QEMU_VM = {
  EOF: 0x00,
  SECTION_START: 0x01,
  SECTION_PART: 0x02,
  SECTION_END: 0x03,
  SECTION_FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  COMMAND: 0x08,
  SECTION_FOOTER: 0x7e,
} as const;

/**
 * The first four bytes of every migration stream: "QEVM".
 *
 * @example Usage
 * ```ts
 * import { QEMU_VM_FILE_MAGIC } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(String.fromCharCode(0x51, 0x45, 0x56, 0x4d), "QEVM");
 * assert.equal(QEMU_VM_FILE_MAGIC >>> 24, 0x51);
 * ```
 */
export const QEMU_VM_FILE_MAGIC = 0x5145564d;

/**
 * The stream format version QEMU writes and reads (2 is obsolete).
 *
 * @example Usage
 * ```ts
 * import { QEMU_VM_FILE_VERSION } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(QEMU_VM_FILE_VERSION, 3);
 * ```
 */
export const QEMU_VM_FILE_VERSION = 3;
