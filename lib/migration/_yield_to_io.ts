/**
 * Lets the runtime look at its sockets in the middle of long work. Private
 * to the postcopy paths of the source and destination.
 *
 * Why it is needed: a postcopy background copy (the source writing its main
 * connection, the destination reading and placing from it) finds its
 * socket ready every time, so each of its reads and writes completes at
 * once and the JavaScript thread never waits. Deno checks which *other*
 * sockets became readable only when the thread waits, so a page request
 * on the return path, or a page on the preempt connection, sat unseen for
 * 20 ms and more (measured with tests/bench/postcopy_fault_latency.ts). A
 * timer turn would do (the thread waits for it) but costs 1-2 ms, since
 * timers fire with millisecond granularity; a MessagePort or promise turn
 * costs microseconds but never waits, so sockets starve (a ping-pong over
 * loopback made no progress at all). An operation that completes on
 * another thread makes the thread wait for about 60 µs, during which the
 * sockets are polled: a digest of zero bytes is one.
 *
 * @module
 */

const NOTHING = new Uint8Array(0);

/**
 * Resolves after the runtime had a chance to see ready sockets (about
 * 60 µs when nothing else is ready).
 *
 * @returns A promise for the turn.
 */
export async function yieldToIo(): Promise<void> {
  await crypto.subtle.digest("SHA-1", NOTHING);
}
