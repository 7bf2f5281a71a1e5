import assert from "node:assert/strict";
import {
  formatTransportUri,
  parseTransportUri,
  type TransportUri,
} from "../../lib/transport/transport_uri.ts";
import { NotSupportedError } from "../../lib/errors.ts";

const VALID: [string, TransportUri][] = [
  ["tcp:127.0.0.1:4444", {
    scheme: "tcp",
    host: "127.0.0.1",
    port: 4444,
  }],
  ["tcp:localhost:0", { scheme: "tcp", host: "localhost", port: 0 }],
  ["tcp::4444", { scheme: "tcp", host: "", port: 4444 }],
  ["tcp:[::1]:4444", { scheme: "tcp", host: "::1", port: 4444 }],
  ["tcp:[fe80::1%eth0]:65535", {
    scheme: "tcp",
    host: "fe80::1%eth0",
    port: 65535,
  }],
  ["tcp:0.0.0.0:4444,to=4450", {
    scheme: "tcp",
    host: "0.0.0.0",
    port: 4444,
    to: 4450,
  }],
  ["tcp:host:1,ipv4=on,ipv6=off", {
    scheme: "tcp",
    host: "host",
    port: 1,
    ipv4: true,
    ipv6: false,
  }],
  ["tcp:host:1,ipv6", { scheme: "tcp", host: "host", port: 1, ipv6: true }],
  ["tcp:host:1,keep-alive=on,mptcp=off", {
    scheme: "tcp",
    host: "host",
    port: 1,
    keepAlive: true,
    mptcp: false,
  }],
  ["unix:/run/vm.sock", { scheme: "unix", path: "/run/vm.sock" }],
  ["unix:relative,with:colon", {
    scheme: "unix",
    path: "relative,with:colon",
  }],
  ["exec:cat > /tmp/vm.mig", {
    scheme: "exec",
    command: "cat > /tmp/vm.mig",
  }],
  ["exec:gzip -c | ssh host 'cat > a:b'", {
    scheme: "exec",
    command: "gzip -c | ssh host 'cat > a:b'",
  }],
  ["file:/tmp/vm.mig", { scheme: "file", path: "/tmp/vm.mig", offset: 0 }],
  ["file:vm.mig,offset=4096", {
    scheme: "file",
    path: "vm.mig",
    offset: 4096,
  }],
  ["file:a,b.mig,offset=1M", {
    scheme: "file",
    path: "a,b.mig",
    offset: 1 << 20,
  }],
  ["file:vm.mig,offset=4k", { scheme: "file", path: "vm.mig", offset: 4096 }],
  ["file:vm.mig,offset=2G", {
    scheme: "file",
    path: "vm.mig",
    offset: 2 ** 31,
  }],
  ["file:vm.mig,offset=1T", {
    scheme: "file",
    path: "vm.mig",
    offset: 2 ** 40,
  }],
  ["file:vm.mig,offset=1.5M", {
    scheme: "file",
    path: "vm.mig",
    offset: 1572864,
  }],
  ["file:vm.mig,offset=1.k", { scheme: "file", path: "vm.mig", offset: 1024 }],
  ["file:vm.mig,offset=12B", { scheme: "file", path: "vm.mig", offset: 12 }],
  ["file:vm.mig,offset=0x1000", {
    scheme: "file",
    path: "vm.mig",
    offset: 4096,
  }],
  ["file:vm.mig,offset=0x1E", { scheme: "file", path: "vm.mig", offset: 30 }],
  ["file:vm.mig,offset=007", { scheme: "file", path: "vm.mig", offset: 7 }],
];

for (const [uri, expected] of VALID) {
  Deno.test(`parseTransportUri() parses "${uri}"`, () => {
    assert.deepEqual(parseTransportUri(uri), expected);
  });
}

const INVALID: [string, "TypeError" | "RangeError", string][] = [
  [
    "",
    "TypeError",
    "expected SCHEME:ADDRESS with scheme tcp, unix, exec or file",
  ],
  [
    "localhost:4444",
    "TypeError",
    'scheme "localhost" is unknown: expected tcp, unix, exec or file',
  ],
  [
    ":4444",
    "TypeError",
    "expected SCHEME:ADDRESS with scheme tcp, unix, exec or file",
  ],
  [
    "TCP:host:1",
    "TypeError",
    'scheme "TCP" is unknown: expected tcp, unix, exec or file',
  ],
  [
    "http://host:1",
    "TypeError",
    'scheme "http" is unknown: expected tcp, unix, exec or file',
  ],
  ["tcp:localhost", "TypeError", "a port is required"],
  ["tcp:localhost:", "TypeError", "a port is required"],
  ["tcp:", "TypeError", "a port is required"],
  [
    "tcp:host:http",
    "TypeError",
    'port must be a decimal number: received "http"',
  ],
  ["tcp:host:-1", "TypeError", 'port must be a decimal number: received "-1"'],
  [
    "tcp:host:65536",
    "RangeError",
    "port must be in [0, 65535]: received 65536",
  ],
  [
    "tcp:host:99999999999999999999",
    "RangeError",
    "port must be in [0, 65535]: received 99999999999999999999",
  ],
  [
    "tcp:::1:4444",
    "TypeError",
    "an IPv6 address must be in brackets, as in tcp:[::1]:4444",
  ],
  ["tcp:[::1:4444", "TypeError", 'the IPv6 address has no closing "]"'],
  ["tcp:[::1]", "TypeError", "a port is required"],
  ["tcp:[]:4444", "TypeError", "the IPv6 address is empty"],
  ["tcp:host:1,to=", "TypeError", "a to port is required"],
  ["tcp:host:1,to", "TypeError", 'option "to" needs a port'],
  ["tcp:host:10,to=9", "RangeError", "to must be >= the port 10: received 9"],
  [
    "tcp:host:1,to=70000",
    "RangeError",
    "to must be in [0, 65535]: received 70000",
  ],
  [
    "tcp:host:1,ipv4=yes",
    "TypeError",
    'option "ipv4" must be on or off: received "yes"',
  ],
  [
    "tcp:host:1,,ipv4",
    "TypeError",
    'option "" is not supported: expected to, ipv4, ipv6, keep-alive or mptcp',
  ],
  [
    "tcp:host:1,nodelay",
    "TypeError",
    'option "nodelay" is not supported: expected to, ipv4, ipv6, keep-alive or mptcp',
  ],
  ["unix:", "TypeError", "a socket path is required"],
  ["exec:", "TypeError", "a command is required"],
  ["exec:   ", "TypeError", "a command is required"],
  ["file:", "TypeError", "a file path is required"],
  ["file:,offset=1", "TypeError", "a file path is required"],
  ...[
    "",
    "abc",
    "-1",
    "1.5",
    "1.5B",
    "0x10M",
    "0x1.8",
    "1e3",
    " 1",
    "1M,x",
    "1KB",
  ].map((
    offset,
  ): [string, "TypeError", string] => [
    `file:vm.mig,offset=${offset}`,
    "TypeError",
    `offset "${offset}" is not a size: expected digits with an optional B, K, M, G, T, P or E suffix (a fraction needs one of K to E), or 0x and hex digits`,
  ]),
  [
    "file:vm.mig,offset=8P",
    "RangeError",
    'offset must be at most 2^53 - 1 bytes: received "8P"',
  ],
  [
    "file:vm.mig,offset=16E",
    "RangeError",
    'offset must be at most 2^53 - 1 bytes: received "16E"',
  ],
];

for (const [uri, name, detail] of INVALID) {
  Deno.test(`parseTransportUri() rejects "${uri}" with a ${name}`, () => {
    assert.throws(() => parseTransportUri(uri), {
      name,
      message: `Cannot parse migration URI "${uri}": ${detail}`,
    });
  });
}

for (const uri of ["vsock:3:4444", "rdma:host:4444", "fd:migfd", "fd:3"]) {
  Deno.test(`parseTransportUri() refuses "${uri}" as not supported`, () => {
    assert.throws(() => parseTransportUri(uri), (error: Error) => {
      assert.ok(error instanceof NotSupportedError);
      assert.match(
        error.message,
        new RegExp(
          `^Cannot open migration URI "${uri}": \\w+: transports are not supported`,
        ),
      );
      return true;
    });
  });
}

Deno.test("parseTransportUri() rejects a value that is not a string", () => {
  assert.throws(() => parseTransportUri(4444 as unknown as string), {
    name: "TypeError",
    message:
      "Cannot parse migration URI as it must be a string: received number",
  });
});

const CANONICAL = [
  "tcp:127.0.0.1:4444",
  "tcp::0",
  "tcp:[::1]:4444,to=4450,ipv4=off,ipv6=on,keep-alive=on,mptcp=off",
  "unix:/run/vm.sock",
  "exec:cat > vm.mig",
  "file:vm.mig",
  "file:vm.mig,offset=1048576",
];

for (const uri of CANONICAL) {
  Deno.test(`formatTransportUri() gives back "${uri}"`, () => {
    assert.equal(formatTransportUri(parseTransportUri(uri)), uri);
  });
}

for (const [uri] of VALID) {
  Deno.test(`formatTransportUri() round-trips "${uri}"`, () => {
    const parsed = parseTransportUri(uri);
    assert.deepEqual(parseTransportUri(formatTransportUri(parsed)), parsed);
  });
}

const UNFORMATTABLE: [TransportUri, "TypeError" | "RangeError", string][] = [
  [
    { scheme: "tcp", host: "h", port: 70000 },
    "RangeError",
    "Cannot format tcp: URI as port must be an integer in [0, 65535]: received 70000",
  ],
  [
    { scheme: "tcp", host: "h", port: 1, to: 1.5 },
    "RangeError",
    "Cannot format tcp: URI as to must be an integer in [0, 65535]: received 1.5",
  ],
  [
    { scheme: "tcp", host: "a,b", port: 1 },
    "TypeError",
    'Cannot format TCP host "a,b": it contains "]" or ","',
  ],
  [
    { scheme: "unix", path: "" },
    "TypeError",
    "Cannot format unix: URI: the path is empty",
  ],
  [
    { scheme: "exec", command: " " },
    "TypeError",
    "Cannot format exec: URI: the command is empty",
  ],
  [
    { scheme: "file", path: "a,offset=1", offset: 0 },
    "TypeError",
    'Cannot format file: URI for path "a,offset=1": it is empty or contains ",offset="',
  ],
  [
    { scheme: "file", path: "a", offset: -1 },
    "RangeError",
    "Cannot format file: URI as offset must be a non-negative safe integer: received -1",
  ],
];

for (const [uri, name, message] of UNFORMATTABLE) {
  Deno.test(`formatTransportUri() rejects ${JSON.stringify(uri)}`, () => {
    assert.throws(() => formatTransportUri(uri), { name, message });
  });
}
