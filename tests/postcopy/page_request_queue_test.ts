import assert from "node:assert/strict";
import { PageRequestQueue } from "../../mod.ts";

Deno.test("PageRequestQueue queues a request page by page, oldest first", () => {
  const queue = new PageRequestQueue();
  queue.push(1, 10, 3);
  queue.push(0, 2);
  assert.equal(queue.requests, 2);
  assert.equal(queue.size, 4);
  const pages = [];
  for (let page = queue.shift(); page; page = queue.shift()) pages.push(page);
  assert.deepEqual(pages, [
    { blockIndex: 1, page: 10 },
    { blockIndex: 1, page: 11 },
    { blockIndex: 1, page: 12 },
    { blockIndex: 0, page: 2 },
  ]);
  assert.equal(queue.size, 0);
  assert.equal(queue.requests, 2, "served requests still count");
});

Deno.test("PageRequestQueue keeps its order across the compaction of served pages", () => {
  const queue = new PageRequestQueue();
  for (let page = 0; page < 3000; page++) queue.push(0, page);
  for (let page = 0; page < 2000; page++) {
    assert.equal(queue.shift()!.page, page);
  }
  queue.push(0, 3000);
  assert.equal(queue.size, 1001);
  for (let page = 2000; page <= 3000; page++) {
    assert.equal(queue.shift()!.page, page);
  }
  assert.equal(queue.shift(), undefined);
});

Deno.test("PageRequestQueue.wait() resolves at once or on the next request", async () => {
  const queue = new PageRequestQueue();
  queue.push(0, 1);
  await queue.wait();
  queue.shift();
  let woken = false;
  const waiting = queue.wait().then(() => woken = true);
  await Promise.resolve();
  assert.equal(woken, false);
  queue.push(0, 2);
  await waiting;
  assert.equal(woken, true);
});
