/**
 * The destination's check of the UUID a source sent with validate-uuid
 * (QEMU's `vmstate_uuid_post_load()` in `migration/savevm.c`), with
 * QEMU's texts. Private to the destination.
 *
 * @module
 */

import { formatUuid } from "../bytes/parse_uuid.ts";
import { MigrationProtocolError } from "../errors.ts";

/**
 * QEMU's check of a received UUID (`vmstate_uuid_post_load()`), with its
 * texts: a VM without a UUID only warns, one with another refuses.
 */
export function checkUuid(
  received: Uint8Array,
  local: Uint8Array | undefined,
  warn: ((message: string) => void) | undefined,
): void {
  if (local === undefined) {
    warn?.(
      `UUID is received ${formatUuid(received)}, but local uuid isn't set`,
    );
    return;
  }
  if (!received.every((byte, i) => byte === local[i])) {
    throw new MigrationProtocolError(
      `Cannot load the CONFIGURATION section: UUID received is ${
        formatUuid(received)
      } and local is ${formatUuid(local)}`,
    );
  }
}
