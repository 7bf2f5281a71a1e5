/**
 * A loopback TCP relay between two processes under test, whose
 * connections a test can cut as a failing network would.
 */
import {
  connectTransport,
  listenTransport,
  type Transport,
} from "../../mod.ts";

/** A running relay. */
export interface TcpRelay {
  /** Where to connect to reach `target` through the relay. */
  readonly address: string;
  /** How many connections it accepted so far. */
  readonly accepted: number;
  /** Closes every connection it carries; it keeps accepting new ones. */
  cut(): Promise<void>;
  /** Stops accepting and closes every connection. */
  close(): Promise<void>;
}

/**
 * Starts a relay that forwards every connection it accepts to `target`.
 *
 * @param target A `tcp:` address.
 * @returns The relay.
 */
export async function startTcpRelay(target: string): Promise<TcpRelay> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const open: Transport[] = [];
  let accepted = 0;
  const accepting = (async () => {
    while (true) {
      const inbound = await listener.accept().catch(() => undefined);
      if (inbound === undefined) return;
      accepted++;
      const outbound = await connectTransport(target);
      open.push(inbound, outbound);
      inbound.readable.pipeTo(outbound.writable).catch(() => {});
      outbound.readable.pipeTo(inbound.writable).catch(() => {});
    }
  })();
  const cut = async () => {
    await Promise.all(open.splice(0).map((t) => t.close()));
  };
  return {
    address: listener.address,
    get accepted() {
      return accepted;
    },
    cut,
    async close() {
      await listener.close();
      await cut();
      await accepting;
    },
  };
}

/** A loopback `tcp:` address with a port that was free a moment ago. */
export async function freeTcpAddress(): Promise<string> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const { address } = listener;
  await listener.close();
  return address;
}
