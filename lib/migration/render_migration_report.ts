/**
 * A migration as one self-contained SVG picture (no scripts, no external
 * references, no fonts beyond the generic families), from samples of
 * `query-migrate`:
 *
 * ```
 * title     what ran, how it ended, total time, downtime, passes, bytes
 * phases    a band of the statuses over time, each span labelled
 * remaining bytes still to send (MiB), with a dashed line at each pass
 *           (bytes sent instead, for a proxy, which cannot know the rest)
 * rates     bandwidth and dirty rate (MiB/s), labelled at their ends
 * throttle  cpu-throttle-percentage (%), when the samples have it
 * marks     the switchover and the downtime, labelled where they are
 * ```
 *
 * @module
 */

import { formatBytes } from "../bytes/human_units.ts";

/** One moment of a migration. */
export interface ReportSample {
  /** Milliseconds since the migration started. */
  atMs: number;
  /** The status then. */
  status: string;
  /** Bytes still to send. */
  remainingBytes?: number;
  /** Bytes sent so far. */
  transferredBytes?: number;
  /** Bytes per second being sent. */
  bandwidth?: number;
  /** Bytes per second the guest dirties. */
  dirtyRate?: number;
  /** Passes over RAM (`dirty-sync-count`). */
  passes?: number;
  /** `cpu-throttle-percentage`, when the guest is throttled. */
  throttlePercent?: number;
}

/** What a report shows. */
export interface ReportData {
  /** What ran, e.g. `livemig migrate tcp:127.0.0.1:4444`. */
  title: string;
  /** The samples, in time order. */
  samples: ReportSample[];
  /** The final status. */
  status: string;
  /** Milliseconds from start to end. */
  totalTimeMs: number;
  /** Milliseconds the guest was stopped, if it was. */
  downtimeMs?: number;
  /** `downtime-limit`, to show next to the downtime. */
  downtimeLimitMs?: number;
  /** Bytes sent in all. */
  transferredBytes?: number;
}

const WIDTH = 1000;
const LEFT = 80;
const RIGHT = 170;
const PLOT_W = WIDTH - LEFT - RIGHT;
const MIB = 1024 * 1024;

/** Colours that read on white and in grey print. */
const PHASE_COLOURS: Record<string, string> = {
  setup: "#d9d9d9",
  active: "#9ecae1",
  "pre-switchover": "#fdae6b",
  device: "#fb6a4a",
  "postcopy-active": "#a1d99b",
  "postcopy-paused": "#fc9272",
  "postcopy-recover-setup": "#fdd0a2",
  "postcopy-recover": "#fdd0a2",
  completed: "#74c476",
  failed: "#de2d26",
  cancelling: "#bdbdbd",
  cancelled: "#bdbdbd",
};

interface Panel {
  top: number;
  height: number;
}

/**
 * Renders a migration report as SVG text.
 *
 * @example Usage
 * ```ts
 * import { renderMigrationReport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const svg = renderMigrationReport({
 *   title: "livemig migrate tcp:127.0.0.1:4444", status: "completed",
 *   totalTimeMs: 1000, downtimeMs: 40, downtimeLimitMs: 300,
 *   samples: [
 *     { atMs: 0, status: "setup" },
 *     { atMs: 100, status: "active", remainingBytes: 60 * MiB, bandwidth: 64 * MiB, passes: 1 },
 *     { atMs: 960, status: "device", remainingBytes: 4 * MiB, bandwidth: 64 * MiB, passes: 3 },
 *     { atMs: 1000, status: "completed", remainingBytes: 0, passes: 4 },
 *   ],
 * });
 * assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
 * assert.match(svg, /downtime 40 ms/);
 * assert.doesNotMatch(svg, /<script|href=/);
 * ```
 *
 * @param data The migration.
 * @returns The SVG document.
 */
export function renderMigrationReport(data: ReportData): string {
  const samples = data.samples;
  const endMs = Math.max(1, data.totalTimeMs, ...samples.map((s) => s.atMs));
  const x = (ms: number) => LEFT + (ms / endMs) * PLOT_W;
  const throttled = samples.some((s) => s.throttlePercent !== undefined);
  const remaining: Panel = { top: 90, height: 210 };
  const rates: Panel = { top: 340, height: 170 };
  const throttle: Panel = { top: 550, height: 70 };
  const height = (throttled ? throttle.top + throttle.height : 530) + 50;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#ffffff"/>`,
    text(LEFT, 24, data.title, { size: 16, weight: "bold" }),
    text(LEFT, 44, summary(data), { size: 13 }),
    ...phaseBand(samples, endMs, x),
    // A proxy knows what it sent, not what remains.
    ...(samples.some((s) => s.remainingBytes !== undefined)
      ? series(samples, remaining, x, {
        label: "remaining",
        unit: "MiB",
        colour: "#2171b5",
        lines: [{ name: "remaining", value: (s) => s.remainingBytes }],
      })
      : series(samples, remaining, x, {
        label: "sent",
        unit: "MiB",
        colour: "#2171b5",
        lines: [{ name: "sent", value: (s) => s.transferredBytes }],
      })),
    ...series(samples, rates, x, {
      label: "rates",
      unit: "MiB/s",
      colour: "#238b45",
      lines: [
        { name: "bandwidth", value: (s) => s.bandwidth },
        { name: "dirty rate", value: (s) => s.dirtyRate, colour: "#d94801" },
      ],
    }),
  ];
  if (throttled) {
    parts.push(...series(samples, throttle, x, {
      label: "CPU throttle",
      unit: "%",
      colour: "#6a51a3",
      scale: 1,
      lines: [{ name: "throttle", value: (s) => s.throttlePercent }],
    }));
  }
  const bottom = throttled ? throttle.top + throttle.height : 510;
  parts.push(...passMarks(samples, x, remaining.top, bottom));
  parts.push(...switchover(data, samples, x, remaining.top, bottom));
  parts.push(...timeAxis(endMs, x, bottom));
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

function summary(data: ReportData): string {
  const facts = [
    `${data.status} after ${(data.totalTimeMs / 1000).toFixed(2)} s`,
  ];
  if (data.downtimeMs !== undefined) {
    facts.push(
      `downtime ${data.downtimeMs} ms${
        data.downtimeLimitMs === undefined
          ? ""
          : ` (limit ${data.downtimeLimitMs} ms)`
      }`,
    );
  }
  const passes = data.samples.findLast((s) => s.passes !== undefined)?.passes;
  if (passes !== undefined) facts.push(`${passes} passes`);
  if (data.transferredBytes !== undefined) {
    facts.push(`${formatBytes(data.transferredBytes)} sent`);
  }
  return facts.join(" · ");
}

/** The statuses over time, as labelled spans. */
function phaseBand(
  samples: ReportSample[],
  endMs: number,
  x: (ms: number) => number,
): string[] {
  const parts = [text(LEFT - 8, 68, "status", { anchor: "end" })];
  const spans: { status: string; from: number; to: number }[] = [];
  for (const s of samples) {
    const last = spans.at(-1);
    if (last && last.status === s.status) continue;
    if (last) last.to = s.atMs;
    spans.push({ status: s.status, from: s.atMs, to: endMs });
  }
  // An end status is a moment, not a phase.
  const last = spans.at(-1);
  if (last && ["completed", "failed", "cancelled"].includes(last.status)) {
    last.to = last.from;
  }
  let aside = 0;
  for (const span of spans) {
    const from = x(span.from);
    const width = Math.max(1, x(span.to) - from);
    const fill = PHASE_COLOURS[span.status] ?? "#eeeeee";
    parts.push(
      `<rect x="${r(from)}" y="56" width="${
        r(width)
      }" height="18" fill="${fill}"/>`,
    );
    const label = span.status;
    if (width > label.length * 6.5 + 6) {
      parts.push(text(from + 4, 69, label, { size: 11 }));
    } else if (span.to > span.from && aside < 2) {
      // Too narrow to hold its name: named beside the band, in its colour,
      // with how long it lasted.
      const y = 62 + 13 * aside++;
      parts.push(
        `<rect x="${LEFT + PLOT_W + 6}" y="${
          y - 8
        }" width="10" height="10" fill="${fill}"/>`,
        text(
          LEFT + PLOT_W + 20,
          y + 1,
          `${label} ${formatMs(span.to - span.from)}`,
          { size: 11 },
        ),
      );
    }
  }
  return parts;
}

interface SeriesOptions {
  label: string;
  unit: string;
  colour: string;
  /** Divides values for the axis (MiB by default). */
  scale?: number;
  lines: {
    name: string;
    value: (s: ReportSample) => number | undefined;
    colour?: string;
  }[];
}

/** One panel: axis with unit, lines, each labelled at its end. */
function series(
  samples: ReportSample[],
  panel: Panel,
  x: (ms: number) => number,
  options: SeriesOptions,
): string[] {
  const scale = options.scale ?? MIB;
  const values = options.lines.flatMap((line) =>
    samples.map(line.value).filter((v): v is number => v !== undefined)
  ).map((v) => v / scale);
  const max = niceMax(Math.max(1, ...values));
  const y = (v: number) => panel.top + panel.height * (1 - v / max);
  const parts = [
    `<rect x="${LEFT}" y="${panel.top}" width="${PLOT_W}" height="${panel.height}" fill="none" stroke="#bdbdbd"/>`,
    text(LEFT - 8, panel.top - 8, `${options.label} (${options.unit})`, {
      anchor: "start",
      weight: "bold",
    }),
  ];
  for (const tick of ticks(max)) {
    parts.push(
      `<line x1="${LEFT - 4}" x2="${LEFT + PLOT_W}" y1="${r(y(tick))}" y2="${
        r(y(tick))
      }" stroke="#eeeeee"/>`,
      text(LEFT - 8, y(tick) + 4, formatTick(tick), { anchor: "end" }),
    );
  }
  const labels: { y: number; text: string; colour: string }[] = [];
  for (const line of options.lines) {
    const colour = line.colour ?? options.colour;
    const points = samples.flatMap((s) => {
      const v = line.value(s);
      return v === undefined ? [] : [[x(s.atMs), y(v / scale), v / scale]];
    });
    if (points.length === 0) continue;
    parts.push(
      `<polyline fill="none" stroke="${colour}" stroke-width="2" points="${
        points.map(([px, py]) => `${r(px!)},${r(py!)}`).join(" ")
      }"/>`,
    );
    const [, lastY, lastV] = points.at(-1)!;
    labels.push({
      y: lastY!,
      text: `${line.name} ${formatTick(lastV!)} ${options.unit}`,
      colour,
    });
  }
  labels.sort((a, b) => a.y - b.y);
  for (let i = 1; i < labels.length; i++) {
    labels[i]!.y = Math.max(labels[i]!.y, labels[i - 1]!.y + 14);
  }
  for (const label of labels) {
    parts.push(
      text(LEFT + PLOT_W + 6, label.y + 4, label.text, {
        colour: label.colour,
        weight: "bold",
      }),
    );
  }
  return parts;
}

/** A dashed line where each pass began, labelled above the panels. */
function passMarks(
  samples: ReportSample[],
  x: (ms: number) => number,
  top: number,
  bottom: number,
): string[] {
  const parts: string[] = [];
  let passes = samples[0]?.passes ?? 0;
  let lastX = -Infinity;
  for (const s of samples) {
    if (s.passes === undefined || s.passes <= passes) continue;
    passes = s.passes;
    const px = x(s.atMs);
    parts.push(
      `<line x1="${r(px)}" x2="${
        r(px)
      }" y1="${top}" y2="${bottom}" stroke="#737373" stroke-dasharray="3,3"/>`,
    );
    if (px - lastX > 44) {
      parts.push(
        text(px + 3, top + 12, `pass ${passes}`, { size: 10, halo: true }),
      );
      lastX = px;
    }
  }
  return parts;
}

/** The switchover line and the downtime, shaded and labelled. */
function switchover(
  data: ReportData,
  samples: ReportSample[],
  x: (ms: number) => number,
  top: number,
  bottom: number,
): string[] {
  const stop = samples.find((s) =>
    s.status === "device" || s.status === "pre-switchover" ||
    s.status === "postcopy-active"
  );
  const downtime = data.downtimeMs;
  if (stop === undefined && downtime === undefined) return [];
  const at = stop?.atMs ?? data.totalTimeMs - (downtime ?? 0);
  const from = x(at);
  const width = Math.max(2, x(at + (downtime ?? 0)) - from);
  const label = downtime === undefined
    ? "switchover"
    : `switchover · downtime ${downtime} ms`;
  return [
    `<rect x="${r(from)}" y="${top}" width="${r(width)}" height="${
      bottom - top
    }" fill="#de2d26" fill-opacity="0.25"/>`,
    `<line x1="${r(from)}" x2="${
      r(from)
    }" y1="${top}" y2="${bottom}" stroke="#de2d26" stroke-width="2"/>`,
    text(from - 4, top + 28, label, {
      anchor: "end",
      colour: "#a50f15",
      weight: "bold",
      halo: true,
    }),
  ];
}

function timeAxis(
  endMs: number,
  x: (ms: number) => number,
  bottom: number,
): string[] {
  const maxS = endMs / 1000;
  const parts = [
    `<line x1="${LEFT}" x2="${
      LEFT + PLOT_W
    }" y1="${bottom}" y2="${bottom}" stroke="#525252"/>`,
    text(LEFT + PLOT_W / 2, bottom + 36, "time (s)", { anchor: "middle" }),
  ];
  for (const tick of ticks(niceMax(maxS))) {
    if (tick > maxS * 1.001) continue;
    const px = x(tick * 1000);
    parts.push(
      `<line x1="${r(px)}" x2="${r(px)}" y1="${bottom}" y2="${
        bottom + 5
      }" stroke="#525252"/>`,
      text(px, bottom + 18, formatTick(tick), { anchor: "middle" }),
    );
  }
  return parts;
}

/** 1, 2 or 5 times a power of ten, at least `value`. */
function niceMax(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function ticks(max: number): number[] {
  const step = max / 5;
  return [0, 1, 2, 3, 4, 5].map((i) => i * step);
}

function formatTick(value: number): string {
  if (value === 0) return "0";
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1).replace(/\.0$/, "");
  return value.toFixed(2).replace(/0$/, "").replace(/\.0$/, "");
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function r(value: number): string {
  return (Math.round(value * 10) / 10).toString();
}

function text(
  x: number,
  y: number,
  content: string,
  style: {
    anchor?: "start" | "middle" | "end";
    size?: number;
    weight?: "bold";
    colour?: string;
    halo?: boolean;
  } = {},
): string {
  const attributes = [
    `x="${r(x)}"`,
    `y="${r(y)}"`,
    style.anchor && style.anchor !== "start"
      ? `text-anchor="${style.anchor}"`
      : "",
    style.size ? `font-size="${style.size}"` : "",
    style.weight ? `font-weight="${style.weight}"` : "",
    `fill="${style.colour ?? "#252525"}"`,
    // A white halo keeps a label readable over lines.
    style.halo ? `stroke="#ffffff" stroke-width="3" paint-order="stroke"` : "",
  ].filter((a) => a !== "");
  return `<text ${attributes.join(" ")}>${escapeXml(content)}</text>`;
}

function escapeXml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
    // deno-lint-ignore no-control-regex
    .replace(/[\x00-\x08\x0b\x0c\x0e-\x1f]/g, "");
}
