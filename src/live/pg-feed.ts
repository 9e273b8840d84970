// PostgreSQL LISTEN as a change feed. postgres.js re-establishes the LISTEN
// connection by itself and calls onlisten each time it is (re)established; the
// view answers with a catch-up reload, which also covers what changed between
// the first load and the first LISTEN.
import type postgres from 'postgres';
import type { ChangeFeed } from './view.ts';

export function pgNotifyFeed(sql: postgres.Sql, channel: string): ChangeFeed {
  return {
    name: 'pg',
    async start(onSignal, onReconnect) {
      const sub = await sql.listen(channel, (payload) => onSignal(payload), onReconnect);
      return () => sub.unlisten();
    },
  };
}
