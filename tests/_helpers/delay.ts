/**
 * Waits `ms` of real time: for tests and tools that talk to real processes
 * (QEMU, `cli.ts` children), where no injected clock reaches.
 *
 * @param ms Milliseconds.
 * @returns A promise that resolves after them.
 */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
