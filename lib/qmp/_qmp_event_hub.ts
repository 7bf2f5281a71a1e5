/**
 * The events side of a QmpClient: hands each event to every iteration of
 * `events()` and to the first `waitForEvent()` it satisfies, and keeps
 * the others for later waits. Private to lib/qmp/.
 *
 * @module
 */

import type { QmpEvent } from "./qmp_client.ts";
import { QmpConnectionError } from "./qmp_connection_error.ts";

/** Events kept for waits before the oldest are dropped. */
const MAX_BACKLOG = 10_000;

interface EventWaiter {
  name: string;
  predicate: (event: QmpEvent) => boolean;
  resolve(event: QmpEvent): void;
  reject(error: Error): void;
}

interface EventSubscriber {
  queue: QmpEvent[];
  wake: (() => void) | undefined;
}

/** Delivers a client's events. */
export class QmpEventHub {
  readonly #backlog: QmpEvent[] = [];
  readonly #waiters = new Set<EventWaiter>();
  readonly #subscribers = new Set<EventSubscriber>();
  #closedError: Error | undefined;

  /** Hands out an event that arrived. */
  deliver(event: QmpEvent): void {
    for (const subscriber of this.#subscribers) {
      subscriber.queue.push(event);
      subscriber.wake?.();
    }
    for (const waiter of this.#waiters) {
      if (waiter.name === event.event && waiter.predicate(event)) {
        this.#waiters.delete(waiter);
        waiter.resolve(event);
        return;
      }
    }
    this.#backlog.push(event);
    if (this.#backlog.length > MAX_BACKLOG) this.#backlog.shift();
  }

  /** The connection closed: waits reject, iterations end. */
  close(error: Error): void {
    if (this.#closedError !== undefined) return;
    this.#closedError = error;
    for (const waiter of this.#waiters) {
      waiter.reject(
        new QmpConnectionError(
          `Cannot wait for QMP event "${waiter.name}": the connection closed`,
          { cause: error },
        ),
      );
    }
    this.#waiters.clear();
    for (const subscriber of this.#subscribers) subscriber.wake?.();
  }

  /** See {@linkcode QmpClient.events}. */
  events(signal: AbortSignal | undefined): AsyncIterableIterator<QmpEvent> {
    const subscriber: EventSubscriber = { queue: [], wake: undefined };
    this.#subscribers.add(subscriber);
    const wake = () => subscriber.wake?.();
    signal?.addEventListener("abort", wake, { once: true });
    const finish = () => {
      this.#subscribers.delete(subscriber);
      signal?.removeEventListener("abort", wake);
    };
    const next = async (): Promise<IteratorResult<QmpEvent>> => {
      while (true) {
        const event = subscriber.queue.shift();
        if (event !== undefined) return { done: false, value: event };
        if (this.#closedError !== undefined || signal?.aborted) {
          finish();
          return { done: true, value: undefined };
        }
        await new Promise<void>((resolve) => subscriber.wake = resolve);
        subscriber.wake = undefined;
      }
    };
    const iterator: AsyncIterableIterator<QmpEvent> = {
      next,
      return: () => {
        finish();
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** See {@linkcode QmpClient.waitForEvent}. */
  waitFor(
    name: string,
    predicate: (event: QmpEvent) => boolean,
    timeoutMs: number,
  ): Promise<QmpEvent> {
    const index = this.#backlog.findIndex((event) =>
      event.event === name && predicate(event)
    );
    if (index !== -1) {
      return Promise.resolve(this.#backlog.splice(index, 1)[0]!);
    }
    if (this.#closedError !== undefined) {
      return Promise.reject(
        new QmpConnectionError(
          `Cannot wait for QMP event "${name}": the connection is closed`,
          { cause: this.#closedError },
        ),
      );
    }
    let waiter: EventWaiter | undefined;
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      waiter = { name, predicate, resolve, reject };
      this.#waiters.add(waiter);
    });
    return withTimeout(promise, timeoutMs, () => {
      if (waiter !== undefined) this.#waiters.delete(waiter);
      return new QmpConnectionError(
        `Cannot wait for QMP event "${name}": none within ${timeoutMs} ms`,
      );
    });
  }
}

/**
 * `promise`, or a rejection with `onTimeout()` after `timeoutMs`.
 *
 * @returns What `promise` settles with, if in time.
 */
export function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  onTimeout: () => Error,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), timeoutMs);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
