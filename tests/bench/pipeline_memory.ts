/**
 * Memory of the source pipeline under a rate limit: a guest of non-zero
 * pages goes through PageSourceStream → PageEncoderStream →
 * MigrationEncoderStream → RateLimitStream → a sink that drops the bytes.
 * Backpressure must keep the pipeline's own memory bounded, however large
 * the guest: the script samples the process's resident set every 20 ms and
 * prints its peak next to the resident set before the run (guest RAM
 * already touched), with the rate the limiter let through.
 *
 * Run:
 *   deno run tests/bench/pipeline_memory.ts [--ram 1GiB] [--rate 100MB/s]
 *     [--release]
 *
 * `--rate 0` lifts the limit. `--release` makes the sink give each chunk back to the encoder after
 * "sending" it (MigrationEncoderStream.release()), as a transport can.
 */
import { parseArgs } from "node:util";
import {
  DirtyPageScanner,
  formatBytes,
  GuestMemory,
  MigrationEncoderStream,
  PageEncoderStream,
  PageSourceStream,
  parseBandwidth,
  parseSize,
  RateLimitStream,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;
const MIB = 1 << 20;

function mib(bytes: number): string {
  return `${(bytes / MIB).toFixed(1)} MiB`;
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    ram: { type: "string", default: "1GiB" },
    rate: { type: "string", default: "100MB/s" },
    release: { type: "boolean", default: false },
  },
});
const ramBytes = parseSize(values.ram, "--ram");
const bytesPerSecond = parseBandwidth(values.rate, "--rate");

const memory = new GuestMemory([{ idstr: "pc.ram", size: ramBytes }]);
const bytes = memory.blocks[0]!.bytes;
const prng = createPrng(3);
const pattern = prng.fill(new Uint8Array(MIB));
for (let at = 0; at < ramBytes; at += MIB) {
  bytes.set(pattern.subarray(0, ramBytes - at), at);
}
const words = new Uint32Array(bytes.buffer, 0, ramBytes / 4);
for (let at = 0; at < ramBytes; at += PAGE) {
  words[at >>> 2] = prng.nextUint32() | 1;
}

const rssBefore = Deno.memoryUsage().rss;
let rssPeak = rssBefore;
const sampler = setInterval(() => {
  rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
}, 20);

const encoder = new MigrationEncoderStream();
const limiter = new RateLimitStream({ bytesPerSecond });
let sent = 0;
const start = performance.now();
await new PageSourceStream(new DirtyPageScanner(memory))
  .pipeThrough(new PageEncoderStream())
  .pipeThrough(encoder)
  .pipeThrough(limiter)
  .pipeTo(
    new WritableStream({
      write(chunk) {
        sent += chunk.byteLength;
        if (values.release) encoder.release(chunk);
      },
    }),
  );
const seconds = (performance.now() - start) / 1000;
clearInterval(sampler);
rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);

// deno-lint-ignore no-console
console.log(
  [
    `guest ${formatBytes(ramBytes)}, limit ${
      (bytesPerSecond / 1e6).toFixed(0)
    } MB/s${values.release ? ", chunks released" : ""}`,
    `sent ${formatBytes(sent)} in ${seconds.toFixed(2)} s: ${
      (sent / 1e6 / seconds).toFixed(1)
    } MB/s`,
    `RSS before ${mib(rssBefore)}, peak ${mib(rssPeak)} (+${
      mib(rssPeak - rssBefore)
    }, guest RAM ${mib(ramBytes)})`,
  ].join("\n"),
);
