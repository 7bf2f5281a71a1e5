/**
 * livemig's own device section: the guest's device state, sent as the
 * FULL section `livemig-guest` (instance 0, version 1) after the RAM, and
 * described in the vmdesc trailer so QEMU's tools and `analyze` can walk
 * it.
 *
 * ```
 * 0x04 be32 section_id, u8 13 "livemig-guest", be32 0, be32 1
 *      state bytes (layout given by the guest's stateFields)
 * 0x7e be32 section_id
 * ```
 *
 * @module
 */

import type { GuestStateField } from "../guest/migratable_guest.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import type { VmdescDevice } from "../wire/vmdesc.ts";

/** The idstr of livemig's device section. */
export const GUEST_SECTION_IDSTR = "livemig-guest";

/** The section id livemig gives its device section (RAM is 0). */
export const GUEST_SECTION_ID = 1;

/** The section id livemig gives the RAM section. */
export const RAM_SECTION_ID = 0;

/**
 * The vmdesc description of a guest's state bytes.
 *
 * @example Usage
 * ```ts
 * import { guestDeviceDescription } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const device = guestDeviceDescription(new Uint8Array(3));
 * assert.deepEqual(device.fields, [{ name: "state", type: "buffer", size: 3 }]);
 * ```
 *
 * @param state The state bytes.
 * @param fields Their layout; without it one buffer.
 * @returns The device entry for the vmdesc.
 * @throws {RangeError} If the fields do not add up to the state's size.
 */
export function guestDeviceDescription(
  state: Uint8Array,
  fields?: readonly GuestStateField[],
): VmdescDevice {
  const list = fields ??
    [{ name: "state", type: "buffer", size: state.byteLength }];
  const total = list.reduce((sum, field) => sum + field.size, 0);
  if (total !== state.byteLength) {
    throw new RangeError(
      `Cannot describe guest state: its fields add up to ${total} bytes but the state is ${state.byteLength}`,
    );
  }
  return {
    name: GUEST_SECTION_IDSTR,
    "instance_id": 0,
    "vmsd_name": GUEST_SECTION_IDSTR,
    version: 1,
    fields: list.map((field) => ({ ...field })),
  };
}

/**
 * The records that end a livemig stream: the guest's FULL section, EOF and
 * the vmdesc trailer.
 *
 * @example Usage
 * ```ts
 * import { guestStateRecords } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const records = guestStateRecords(new Uint8Array([1, 2]), undefined, 4096);
 * assert.deepEqual(records.map((r) => r.type), [
 *   "section-full", "device-state", "section-footer", "eof", "vmdesc",
 * ]);
 * ```
 *
 * @param state The guest's state bytes.
 * @param fields Their layout.
 * @param pageSize The target page size, for the vmdesc.
 * @returns The records.
 */
export function guestStateRecords(
  state: Uint8Array,
  fields: readonly GuestStateField[] | undefined,
  pageSize: number,
): MigrationRecord[] {
  const device = guestDeviceDescription(state, fields);
  const document = { "page_size": pageSize, devices: [device] };
  return [
    {
      type: "section-full",
      sectionId: GUEST_SECTION_ID,
      idstr: GUEST_SECTION_IDSTR,
      instanceId: 0,
      versionId: 1,
    },
    {
      type: "device-state",
      sectionId: GUEST_SECTION_ID,
      idstr: GUEST_SECTION_IDSTR,
      instanceId: 0,
      data: state,
    },
    { type: "section-footer", sectionId: GUEST_SECTION_ID },
    { type: "eof" },
    {
      type: "vmdesc",
      data: new TextEncoder().encode(JSON.stringify(document)),
      document,
    },
  ];
}
