import assert from "node:assert/strict";
import {
  renderMigrationReport,
  type ReportData,
  type ReportSample,
} from "../../mod.ts";

const MIB = 1024 * 1024;

function precopy(): ReportData {
  const samples: ReportSample[] = [{ atMs: 0, status: "setup" }];
  for (let at = 100; at <= 2000; at += 100) {
    samples.push({
      atMs: at,
      status: at < 1900 ? "active" : "device",
      remainingBytes: Math.max(0, 64 * MIB - at * 40_000),
      bandwidth: 32 * MIB,
      dirtyRate: at > 1000 ? 8 * MIB : 0,
      passes: at < 1000 ? 1 : at < 1500 ? 2 : 3,
    });
  }
  samples.push({ atMs: 2050, status: "completed", remainingBytes: 0 });
  return {
    title: "livemig migrate tcp:127.0.0.1:4444",
    samples,
    status: "completed",
    totalTimeMs: 2050,
    downtimeMs: 120,
    downtimeLimitMs: 300,
    transferredBytes: 80 * MIB,
  };
}

Deno.test("renderMigrationReport() draws one self-contained SVG", () => {
  const svg = renderMigrationReport(precopy());
  assert.match(
    svg,
    /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="1000"/,
  );
  assert.equal(svg.match(/<svg/g)!.length, 1);
  assert.match(svg, /<\/svg>\n$/);
  // No scripts, links, external images, fonts or styles.
  assert.doesNotMatch(svg, /<script|href|url\(|@import|<image|<style/i);
});

Deno.test("renderMigrationReport() labels axes with units and lines directly", () => {
  const svg = renderMigrationReport(precopy());
  for (
    const label of [
      ">remaining (MiB)<",
      ">rates (MiB/s)<",
      ">time (s)<",
      ">status<",
      ">bandwidth 32 MiB/s<",
      ">dirty rate 8 MiB/s<",
      ">remaining 0 MiB<",
      ">pass 2<",
      ">pass 3<",
      ">switchover · downtime 120 ms<",
      ">completed after 2.05 s · downtime 120 ms (limit 300 ms) · 3 passes · 80.0 MiB sent<",
    ]
  ) {
    assert.ok(svg.includes(label), label);
  }
  // The switchover is where the guest stopped (device, at 1.9 s of 2.05).
  const x = 80 + 1900 / 2050 * 750;
  assert.match(
    svg,
    new RegExp(`<line x1="${Math.round(x * 10) / 10}"[^>]*stroke="#de2d26"`),
  );
  assert.doesNotMatch(svg, /CPU throttle/);
});

Deno.test("renderMigrationReport() shows postcopy and recovery phases, and the throttle when there is one", () => {
  const statuses = [
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
    "postcopy-active",
    "completed",
  ];
  const samples: ReportSample[] = statuses.map((status, i) => ({
    atMs: i * 1000,
    status,
    remainingBytes: (5 - i) * 10 * MIB,
    throttlePercent: 20 + 10 * i,
  }));
  const svg = renderMigrationReport({
    title: "postcopy",
    samples,
    status: "completed",
    totalTimeMs: 5000,
  });
  for (const status of statuses.slice(0, 5)) {
    assert.ok(svg.includes(`>${status}<`), status);
  }
  assert.match(svg, />CPU throttle \(%\)</);
  assert.match(svg, />throttle 70 %</);
  // The guest stopped when postcopy began.
  assert.match(svg, />switchover</);
});

Deno.test("renderMigrationReport() escapes text", () => {
  const svg = renderMigrationReport({
    ...precopy(),
    title: `migrate "exec:cat <in >out" & more\x01`,
  });
  assert.ok(
    svg.includes(
      ">migrate &#34;exec:cat &#60;in &#62;out&#34; &#38; more</text>",
    ),
  );
});

Deno.test("renderMigrationReport() draws what a proxy sent when nothing says what remains", () => {
  const svg = renderMigrationReport({
    title: "livemig proxy to tcp:127.0.0.1:4444",
    samples: [
      { atMs: 0, status: "active", transferredBytes: 0, bandwidth: 0 },
      { atMs: 1000, status: "active", transferredBytes: 20 * MIB },
      { atMs: 2000, status: "completed", transferredBytes: 40 * MIB },
    ],
    status: "completed",
    totalTimeMs: 2000,
  });
  assert.match(svg, />sent \(MiB\)</);
  assert.match(svg, />sent 40 MiB</);
  assert.doesNotMatch(svg, /remaining/);
});
