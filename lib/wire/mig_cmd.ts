/**
 * The COMMAND records of QEMU's migration stream (`MIG_CMD_*` in QEMU's
 * `migration/savevm.c`), with their payload lengths.
 *
 * ```
 * 0x08  be16 cmd  be16 len  payload[len]      (PACKAGED: then be32 N more bytes)
 * ```
 *
 * | cmd | name | len |
 * |---|---|---|
 * | 1 | OPEN_RETURN_PATH | 0 |
 * | 2 | PING | 4 |
 * | 3 | POSTCOPY_ADVISE | 0 or 16 |
 * | 4 | POSTCOPY_LISTEN | 0 |
 * | 5 | POSTCOPY_RUN | 0 |
 * | 6 | POSTCOPY_RAM_DISCARD | variable |
 * | 7 | PACKAGED | 4 |
 * | 8 | ENABLE_COLO | 0 |
 * | 9 | POSTCOPY_RESUME | 0 |
 * | 10 | RECV_BITMAP | variable |
 * | 11 | SWITCHOVER_START | 0 (QEMU 10.0; unknown to 7.2) |
 *
 * @example Usage
 * ```ts
 * import { MIG_CMD, MIG_CMD_LENGTH } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MIG_CMD.PING, 2);
 * assert.equal(MIG_CMD_LENGTH.PING, 4);
 * ```
 */
export const MIG_CMD = {
  INVALID: 0,
  OPEN_RETURN_PATH: 1,
  PING: 2,
  POSTCOPY_ADVISE: 3,
  POSTCOPY_LISTEN: 4,
  POSTCOPY_RUN: 5,
  POSTCOPY_RAM_DISCARD: 6,
  PACKAGED: 7,
  ENABLE_COLO: 8,
  POSTCOPY_RESUME: 9,
  RECV_BITMAP: 10,
  SWITCHOVER_START: 11,
} as const;

/** The name of a migration command, as in `MIG_CMD_<name>`. */
export type MigCmdName = Exclude<keyof typeof MIG_CMD, "INVALID">;

/**
 * The fixed payload length of each command; `undefined` where it varies
 * (POSTCOPY_ADVISE is 0 or 16).
 *
 * @example Usage
 * ```ts
 * import { MIG_CMD_LENGTH } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MIG_CMD_LENGTH.PACKAGED, 4);
 * assert.equal(MIG_CMD_LENGTH.POSTCOPY_RAM_DISCARD, undefined);
 * ```
 */
export const MIG_CMD_LENGTH: {
  readonly [N in MigCmdName]: number | undefined;
} = {
  OPEN_RETURN_PATH: 0,
  PING: 4,
  POSTCOPY_ADVISE: undefined,
  POSTCOPY_LISTEN: 0,
  POSTCOPY_RUN: 0,
  POSTCOPY_RAM_DISCARD: undefined,
  PACKAGED: 4,
  ENABLE_COLO: 0,
  POSTCOPY_RESUME: 0,
  RECV_BITMAP: undefined,
  SWITCHOVER_START: 0,
};

/**
 * The name of command number `cmd`, or `undefined` when QEMU has none.
 *
 * @example Usage
 * ```ts
 * import { migCmdName } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(migCmdName(7), "PACKAGED");
 * assert.equal(migCmdName(0), undefined);
 * assert.equal(migCmdName(12), undefined);
 * ```
 *
 * @param cmd The command number.
 * @returns Its name.
 */
export function migCmdName(cmd: number): MigCmdName | undefined {
  return NAMES[cmd];
}

const NAMES: (MigCmdName | undefined)[] = [];
for (const [name, value] of Object.entries(MIG_CMD)) {
  if (value !== 0) NAMES[value] = name as MigCmdName;
}

/**
 * QEMU's largest PACKAGED blob: the be32 length's whole range.
 *
 * @example Usage
 * ```ts
 * import { MAX_VM_CMD_PACKAGED_SIZE } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MAX_VM_CMD_PACKAGED_SIZE, 2 ** 32 - 1);
 * ```
 */
export const MAX_VM_CMD_PACKAGED_SIZE = 0xffff_ffff;

/**
 * How many ranges QEMU packs into one POSTCOPY_RAM_DISCARD command.
 *
 * @example Usage
 * ```ts
 * import { MAX_DISCARDS_PER_COMMAND } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MAX_DISCARDS_PER_COMMAND, 12);
 * ```
 */
export const MAX_DISCARDS_PER_COMMAND = 12;
