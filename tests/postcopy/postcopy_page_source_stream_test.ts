import assert from "node:assert/strict";
import {
  DirtyPageScanner,
  GuestMemory,
  type PageBatch,
  PageRequestQueue,
  PostcopyPageSourceStream,
  takeRequested,
} from "../../mod.ts";

const PAGE = 4096;

function setup(blocks: [string, number][] = [["pc.ram", 16]]) {
  const memory = new GuestMemory(
    blocks.map(([idstr, pages]) => ({ idstr, size: pages * PAGE })),
  );
  return {
    scanner: new DirtyPageScanner(memory),
    requests: new PageRequestQueue(),
  };
}

function pagesOf(batches: PageBatch[]): string[] {
  return batches.map((b) => `${b.block.idstr}:${[...b.pages].join(",")}`);
}

Deno.test("PostcopyPageSourceStream serves requests before the next background batch", async () => {
  const { scanner, requests } = setup();
  const urgent: PageBatch[] = [];
  const stream = new PostcopyPageSourceStream(scanner, requests, {
    batchPages: 4,
    onUrgent: (batch) => urgent.push(batch),
  });
  const reader = stream.getReader();
  const first = await reader.read();
  assert.deepEqual([...first.value!.pages], [0, 1, 2, 3]);
  requests.push(0, 12, 2);
  const second = await reader.read();
  assert.deepEqual([...second.value!.pages], [12, 13]);
  assert.deepEqual(pagesOf(urgent), ["pc.ram:12,13"]);
  // The scan goes on after the requested pages, then wraps.
  const rest: PageBatch[] = [];
  for (let r = await reader.read(); !r.done; r = await reader.read()) {
    rest.push(r.value);
  }
  assert.deepEqual(pagesOf(rest), [
    "pc.ram:14,15",
    "pc.ram:4,5,6,7",
    "pc.ram:8,9,10,11",
  ]);
  assert.equal(scanner.remainingPages, 0);
});

Deno.test("PostcopyPageSourceStream leaves requests alone when they are served elsewhere", async () => {
  const { scanner, requests } = setup();
  requests.push(0, 9);
  const batches = await Array.fromAsync(
    new PostcopyPageSourceStream(scanner, requests, {
      batchPages: 8,
      requestsElsewhere: true,
    }),
  );
  assert.deepEqual(pagesOf(batches), [
    "pc.ram:0,1,2,3,4,5,6,7",
    "pc.ram:8,9,10,11,12,13,14,15",
  ]);
  assert.equal(requests.size, 1, "still queued for the preempt channel");
});

Deno.test("PostcopyPageSourceStream still serves a request when the step is over", async () => {
  const { scanner, requests } = setup();
  requests.push(0, 5);
  const batches = await Array.fromAsync(
    new PostcopyPageSourceStream(scanner, requests, { shouldStop: () => true }),
  );
  assert.deepEqual(pagesOf(batches), ["pc.ram:5"]);
});

Deno.test("takeRequested takes one block per batch and leaves the next block for later", () => {
  const { scanner, requests } = setup([["pc.ram", 8], ["pc.rom", 4]]);
  requests.push(0, 1);
  requests.push(1, 2);
  requests.push(0, 3);
  assert.deepEqual(pagesOf([takeRequested(scanner, requests)!]), ["pc.ram:1"]);
  assert.deepEqual(pagesOf([takeRequested(scanner, requests)!]), [
    "pc.ram:3",
  ]);
  assert.deepEqual(pagesOf([takeRequested(scanner, requests)!]), [
    "pc.rom:2",
  ]);
  assert.equal(takeRequested(scanner, requests), undefined);
});

Deno.test("takeRequested returns at most 64 pages at a time", () => {
  const { scanner, requests } = setup([["pc.ram", 100]]);
  requests.push(0, 0, 100);
  assert.equal(takeRequested(scanner, requests)!.pages.length, 64);
  assert.equal(takeRequested(scanner, requests)!.pages.length, 36);
  assert.equal(scanner.remainingPages, 0);
});

Deno.test("takeRequested resends pages already taken only when asked", () => {
  const { scanner, requests } = setup();
  assert.deepEqual([...scanner.next(4)!.pages], [0, 1, 2, 3]);
  requests.push(0, 2);
  assert.equal(takeRequested(scanner, requests), undefined);
  requests.push(0, 2);
  assert.deepEqual([
    ...takeRequested(scanner, requests, { resend: true })!.pages,
  ], [2]);
  // A resend does not move the scan.
  assert.deepEqual([...scanner.next(2)!.pages], [4, 5]);
});
