import assert from "node:assert/strict";
import { formatStreamAnalysis, type StreamAnalysis } from "../../mod.ts";

const EMPTY: StreamAnalysis = {
  bytes: 9,
  version: null,
  machine: null,
  "page-size": 4096,
  capabilities: [],
  commands: {},
  pings: [],
  sections: { start: 0, part: 0, end: 0, full: 0, footer: 0 },
  ram: {
    total: 0,
    blocks: [],
    zero: 0,
    normal: 0,
    xbzrle: 0,
    compressed: 0,
    eos: 0,
    continue: 0,
    "multifd-flush": 0,
    "xbzrle-bytes": 0,
  },
  devices: [],
  "device-tail": null,
  eof: false,
  vmdesc: null,
};

Deno.test("formatStreamAnalysis() prints every part of a full analysis", () => {
  const analysis: StreamAnalysis = {
    ...EMPTY,
    format: "mapped-ram",
    bytes: 1234,
    version: 3,
    machine: "pc-q35-10.0",
    capabilities: ["mapped-ram", "xbzrle"],
    commands: { OPEN_RETURN_PATH: 1, PING: 2 },
    pings: [1, 7],
    sections: { start: 1, part: 2, end: 1, full: 2, footer: 6 },
    ram: {
      ...EMPTY.ram,
      total: 12288,
      blocks: [
        {
          name: "pc.ram",
          size: 8192,
          zero: 1,
          normal: 1,
          xbzrle: 3,
          compressed: 2,
        },
        {
          name: "vga.vram-long-name",
          size: 4096,
          zero: 1,
          normal: 0,
          xbzrle: 0,
          compressed: 0,
        },
      ],
      zero: 2,
      normal: 1,
      xbzrle: 3,
      compressed: 2,
      eos: 3,
      continue: 4,
    },
    devices: [
      {
        name: "timer",
        "instance-id": 0,
        "section-id": 3,
        version: 2,
        size: 40,
      },
      {
        name: "0000:00:01.1/ide",
        "instance-id": 12,
        "section-id": 4,
        version: 10,
        size: 1200,
      },
    ],
    "device-tail": { offset: 500, bytes: 77, validated: false },
    eof: true,
    vmdesc: { bytes: 321, devices: 2 },
    "check-xbzrle": { records: 3, identical: 2 },
  };
  assert.equal(
    formatStreamAnalysis(analysis),
    `QEMU mapped-ram file, version 3, 1234 bytes
machine       pc-q35-10.0, page size 4096
capabilities  mapped-ram, xbzrle
commands      OPEN_RETURN_PATH ×1, PING ×2 (1, 7)
sections      1 START, 2 PART, 1 END, 2 FULL, 6 footers
RAM           12288 bytes in 2 blocks: 2 zero, 1 normal, 3 xbzrle, 2 compressed pages; 3 EOS, 4 with CONTINUE
  block                      size      zero    normal    xbzrle
  pc.ram                     8192         1         1         3  (2 compressed)
  vga.vram-long-name         4096         1         0         0
devices       2 sections, 1240 bytes of state
  timer (0)              v2        40 bytes
  0000:00:01.1/ide (12)  v10     1200 bytes
device tail   77 bytes at offset 500, not walked (no vmdesc)
eof           yes
vmdesc        321 bytes, 2 devices
check-xbzrle  2 of 3 XBZRLE records re-encode byte-identically
`,
  );
});

Deno.test("formatStreamAnalysis() says what is absent", () => {
  assert.equal(
    formatStreamAnalysis({
      ...EMPTY,
      "device-tail": { offset: 9, bytes: 5, validated: true },
    }),
    `QEMU migration stream, version ?, 9 bytes
machine       (no CONFIGURATION), page size 4096
capabilities  (none)
commands      (none)
sections      0 START, 0 PART, 0 END, 0 FULL, 0 footers
RAM           0 bytes in 0 blocks: 0 zero, 0 normal, 0 xbzrle pages; 0 EOS, 0 with CONTINUE
device tail   5 bytes at offset 9, walked through the vmdesc
eof           no
vmdesc        absent
`,
  );
});
