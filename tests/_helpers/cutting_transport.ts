/**
 * An in-process connection that breaks once the destination has received
 * a given number of bytes of the migration stream, like a TCP connection
 * whose relay dies: built on {@linkcode createMemoryTransportPair}.
 *
 * ```
 * source.writable ──▶ a ══ memory pair ══ b ──count──▶ destination.readable
 * source.readable ◀── a ══════════════════ b ◀──────── destination.writable
 * after exactly N bytes reached the destination, both directions break:
 *   "close"  its next read sees the end; the source's return path ends
 *   "reset"  its next read fails, and so does the source's
 *   either way writes on both ends fail, and what the source wrote past
 *   N is lost in flight
 * ```
 *
 * @module
 */
import {
  createMemoryTransportPair,
  type Transport,
  TransportError,
} from "../../mod.ts";

/** How the connection breaks. */
export type CutMode = "close" | "reset";

/** A connection that breaks, and what it saw. */
export interface CuttingTransportPair {
  /** The source's end: it writes the stream, reads the return path. */
  source: Transport;
  /** The destination's end. */
  destination: Transport;
  /** Resolves once the connection broke (never when the stream was shorter). */
  cut: Promise<void>;
  /** Whether the connection broke. */
  readonly isCut: boolean;
  /** Bytes of the stream the destination received. */
  readonly delivered: number;
  /** Where the connection breaks; may be moved until it broke. */
  cutAfter: number;
}

/**
 * Creates a connection that breaks once `cutAfter` bytes of the stream
 * reached the destination (`Infinity`: never, unless `cutAfter` is moved
 * later).
 *
 * @param cutAfter Bytes of the stream that get through.
 * @param mode How it breaks.
 * @returns The two ends.
 */
export function createCuttingTransportPair(
  cutAfter: number,
  mode: CutMode = "close",
): CuttingTransportPair {
  const [a, b] = createMemoryTransportPair({
    descriptions: ["memory:source", "memory:destination"],
  });
  const cut = Promise.withResolvers<void>();
  let isCut = false;
  let delivered = 0;
  const returnPath = interruptible(a.readable);
  function breakNow(): void {
    isCut = true;
    if (mode === "reset") returnPath.interrupt(resetError("source"));
    void a.close();
    void b.close();
    cut.resolve();
  }
  const upstream = b.readable.getReader();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      // A mark moved to or behind what was delivered breaks at this read.
      if (!isCut && delivered >= pair.cutAfter) breakNow();
      if (isCut) {
        if (mode === "reset") controller.error(resetError("destination"));
        else controller.close();
        return;
      }
      const { done, value } = await upstream.read();
      if (done) return controller.close();
      const room = Math.max(0, pair.cutAfter - delivered);
      if (value.byteLength < room) {
        delivered += value.byteLength;
        controller.enqueue(value);
        return;
      }
      delivered += room;
      if (room > 0) controller.enqueue(value.subarray(0, room));
      breakNow();
    },
    cancel: (reason) => upstream.cancel(reason),
  }, { highWaterMark: 0 });
  const inner = a.writable.getWriter();
  inner.closed.catch(() => {});
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (isCut) throw brokenPipe();
      try {
        await inner.write(chunk);
      } catch (error) {
        throw isCut ? brokenPipe() : error;
      }
    },
    close: () => inner.close(),
    abort: (reason) => inner.abort(reason),
  });
  const pair: CuttingTransportPair = {
    source: {
      description: "memory:source",
      readable: returnPath.readable,
      writable,
      close: () => a.close(),
    },
    destination: {
      description: "memory:destination",
      readable: stream,
      writable: b.writable,
      close: () => b.close(),
    },
    cut: cut.promise,
    get isCut() {
      return isCut;
    },
    get delivered() {
      return delivered;
    },
    cutAfter,
  };
  return pair;
}

/** What a socket's read reports when the peer reset the connection. */
function resetError(side: string): TransportError {
  return new TransportError(
    `Cannot read from "memory:${side}": Connection reset by peer (os error 104)`,
    {
      uri: `memory:${side}`,
      cause: new Deno.errors.ConnectionReset("Connection reset by peer"),
    },
  );
}

/** What a socket's write reports once the connection is gone. */
function brokenPipe(): TransportError {
  return new TransportError(
    'Cannot write to "memory:source": Broken pipe (os error 32)',
    {
      uri: "memory:source",
      cause: new Deno.errors.BrokenPipe("Broken pipe (os error 32)"),
    },
  );
}

/** A readable that can be errored from outside, at once. */
function interruptible(readable: ReadableStream<Uint8Array>): {
  readable: ReadableStream<Uint8Array>;
  interrupt(reason: unknown): void;
} {
  let controller!: TransformStreamDefaultController<Uint8Array>;
  const relay = new TransformStream<Uint8Array, Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  readable.pipeTo(relay.writable).catch(() => {});
  return {
    readable: relay.readable,
    interrupt(reason) {
      try {
        controller.error(reason);
      } catch {
        // already closed or errored
      }
    },
  };
}
