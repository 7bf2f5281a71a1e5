/**
 * Helpers to make Deno's open and accept calls, which take no signal,
 * abortable. Private to lib/transport/.
 *
 * @module
 */

/**
 * Settles like `promise`, or rejects with `signal.reason` as soon as the
 * signal aborts. A value that arrives after the abort is passed to `discard`
 * (close the late connection, kill the late process) so nothing leaks.
 */
export function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  discard: (value: T) => void,
): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    let aborted = false;
    function onAbort(): void {
      aborted = true;
      reject(signal!.reason);
    }
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    promise.then((value) => {
      signal.removeEventListener("abort", onAbort);
      if (aborted) discard(value);
      else resolve(value);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      if (!aborted) reject(error);
    });
  });
}
