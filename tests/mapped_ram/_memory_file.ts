/**
 * A sparse in-memory {@linkcode RandomAccessFile} for mapped-ram tests:
 * bytes live in 4 KiB pieces allocated on first write, so a file with 1 MiB
 * holes costs only what was written. It records every call, so tests can
 * count and size the writes and reads a stage issued.
 *
 * @module
 */
import {
  type RandomAccessFile,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";

const PIECE = 4096;

/** One recorded operation. */
export type FileOperation =
  | { op: "write"; offset: number; size: number }
  | { op: "read"; offset: number; size: number }
  | { op: "truncate"; size: number };

/** The in-memory file, with its recorded operations. */
export interface MemoryFile extends RandomAccessFile {
  /** Every call so far, in order. */
  readonly operations: FileOperation[];
  /** The whole content as one array (holes as zeros). */
  bytes(): Uint8Array;
  /** Current size, synchronously. */
  readonly length: number;
}

/**
 * Creates an empty sparse in-memory file.
 *
 * @param initial Bytes the file starts with.
 * @returns The file.
 */
export function createMemoryFile(initial?: Uint8Array): MemoryFile {
  const pieces = new Map<number, Uint8Array>();
  const operations: FileOperation[] = [];
  let size = 0;
  const piece = (index: number) => {
    let bytes = pieces.get(index);
    if (bytes === undefined) {
      bytes = new Uint8Array(PIECE);
      pieces.set(index, bytes);
    }
    return bytes;
  };
  const write = (offset: number, bytes: Uint8Array) => {
    for (let done = 0; done < bytes.byteLength;) {
      const at = offset + done;
      const index = Math.floor(at / PIECE);
      const within = at - index * PIECE;
      const count = Math.min(PIECE - within, bytes.byteLength - done);
      piece(index).set(bytes.subarray(done, done + count), within);
      done += count;
    }
    size = Math.max(size, offset + bytes.byteLength);
  };
  const read = (offset: number, length: number) => {
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const at = offset + done;
      const index = Math.floor(at / PIECE);
      const within = at - index * PIECE;
      const count = Math.min(PIECE - within, length - done);
      const bytes = pieces.get(index);
      if (bytes) out.set(bytes.subarray(within, within + count), done);
      done += count;
    }
    return out;
  };
  if (initial) write(0, initial);
  return {
    operations,
    get length() {
      return size;
    },
    bytes: () => read(0, size),
    readAt(offset, length) {
      operations.push({ op: "read", offset, size: length });
      if (offset + length > size) {
        return Promise.reject(
          new UnexpectedEndOfStreamError(length, {
            offset,
            receivedBytes: Math.max(0, size - offset),
          }),
        );
      }
      return Promise.resolve(read(offset, length));
    },
    writeAt(offset, bytes) {
      operations.push({ op: "write", offset, size: bytes.byteLength });
      write(offset, bytes);
      return Promise.resolve();
    },
    size: () => Promise.resolve(size),
    truncate(length) {
      operations.push({ op: "truncate", size: length });
      for (const index of [...pieces.keys()]) {
        if (index * PIECE >= length) pieces.delete(index);
        else if ((index + 1) * PIECE > length) {
          pieces.get(index)!.fill(0, length - index * PIECE);
        }
      }
      size = length;
      return Promise.resolve();
    },
    close: () => Promise.resolve(),
  };
}
