// Redis for what several nodes share beyond PostgreSQL: a second change feed
// (pub/sub), and counters. Everything that uses Redis degrades to node-local
// behaviour while it is down; ioredis reconnects with backoff by itself.
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { ChangeFeed } from '../live/index.ts';

export type { Redis };

const BASE: RedisOptions = {
  // Commands fail fast while disconnected (callers fall back) instead of queueing.
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5000),
  lazyConnect: false,
};

/** A command connection. `up()` says whether it is connected now. */
export function connectRedis(url: string, log: Logger, name = 'utilmeta-proxy'): Redis {
  const client = new Redis(url, { ...BASE, connectionName: name });
  let down = false;
  client.on('error', (err) => {
    if (!down) log.warn({ err: err.message }, 'redis unavailable; continuing node-local');
    down = true;
  });
  client.on('ready', () => {
    if (down) log.info('redis reconnected');
    down = false;
  });
  return client;
}

export function redisUp(client: Redis | null): boolean {
  return client !== null && client.status === 'ready';
}

/** Pub/sub as a change feed, on its own connection (a subscribed connection runs no commands). */
export function redisFeed(url: string, channel: string, log: Logger): ChangeFeed {
  return {
    name: 'redis',
    async start(onSignal, onReconnect) {
      const sub = new Redis(url, { ...BASE, enableOfflineQueue: true, maxRetriesPerRequest: null, connectionName: 'utilmeta-proxy-sub' });
      let ready = false;
      sub.on('error', () => {});
      sub.on('ready', () => {
        // ioredis re-subscribes on reconnect; whatever was published meanwhile is caught up.
        if (ready) onReconnect();
        ready = true;
      });
      sub.on('message', (ch: string, message: string) => {
        if (ch === channel) onSignal(message);
      });
      // Not awaited: with Redis down at start the node must not wait for it.
      void sub.subscribe(channel).catch((err: Error) => log.warn({ err: err.message }, "redis subscribe failed; it is retried on reconnect"));
      return async () => {
        sub.disconnect();
      };
    },
  };
}
