import type { GuestMemory } from "../guest/guest_memory.ts";

/**
 * SHA-256 of every RAM block, by idstr, as lowercase hex: how two ends of
 * a migration prove they hold the same RAM.
 *
 * @example Usage
 * ```ts
 * import { GuestMemory, ramSha256 } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "guest.ram", size: 4096 }]);
 * assert.deepEqual(await ramSha256(memory), {
 *   "guest.ram": "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7",
 * });
 * ```
 *
 * @param memory The guest's RAM.
 * @returns The digests.
 */
export async function ramSha256(
  memory: GuestMemory,
): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const block of memory.blocks) {
    const digest = await crypto.subtle.digest(
      "SHA-256",
      block.bytes as Uint8Array<ArrayBuffer>,
    );
    digests[block.idstr] = Array.from(
      new Uint8Array(digest),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
  }
  return digests;
}
