/**
 * What `query-migrate` says about dirty-limit (QEMU 8.1 on), for a guest
 * that holds its own dirty rate to the limit. Private to the source.
 *
 * QEMU measures with KVM's dirty ring: a vCPU that fills its ring exits,
 * and the limiter sleeps it long enough to hold its rate. livemig's guests
 * have no ring; both fields are computed for a ring of QEMU's usual size
 * (`dirty-ring-size=4096` pages), in microseconds as QEMU reports them:
 *
 * ```
 * ring                      4096 pages × page size
 * ring-full-time            ring / the highest dirty rate measured
 *                           (0 while the guest dirtied nothing)
 * throttle-time-per-round   time a full ring takes at the limit
 *                           − time it takes unthrottled
 *                           = ring × (1 / limit − 1 / unthrottled rate)
 * ```
 *
 * @module
 */

/** Pages in the notional dirty ring of one vCPU. */
export const DIRTY_RING_PAGES = 4096;

/** The dirty-limit members of `query-migrate`, in microseconds. */
export interface DirtyLimitInfo {
  /** How long the guest sleeps per full ring to hold the limit. */
  "dirty-limit-throttle-time-per-round": number;
  /** How long the guest takes to fill its ring (0: it dirties nothing). */
  "dirty-limit-ring-full-time": number;
}

/** What {@linkcode dirtyLimitInfo} computes from. */
export interface DirtyLimitModel {
  /** The page size. */
  pageSize: number;
  /** The cap, bytes per second. */
  limit: number;
  /** The dirty rate measured before the cap, bytes per second. */
  unlimitedRate: number;
  /** The highest dirty rate measured, bytes per second. */
  maxDirtyRate: number;
}

/**
 * The two dirty-limit members of `query-migrate` for a guest held to
 * `limit`.
 *
 * @param model The rates.
 * @returns The members, whole microseconds.
 */
export function dirtyLimitInfo(model: DirtyLimitModel): DirtyLimitInfo {
  const ring = DIRTY_RING_PAGES * model.pageSize;
  const { limit, unlimitedRate, maxDirtyRate } = model;
  const sleep = unlimitedRate > limit
    ? ring * (1 / limit - 1 / unlimitedRate)
    : 0;
  return {
    "dirty-limit-throttle-time-per-round": Math.round(sleep * 1e6),
    "dirty-limit-ring-full-time": maxDirtyRate > 0
      ? Math.round(ring / maxDirtyRate * 1e6)
      : 0,
  };
}
