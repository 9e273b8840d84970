// Request ids: the caller's when it is well-formed, else a process prefix and a
// counter (a UUID per request costs a random read and 36 bytes for no gain:
// ids only need to be unique across the nodes' logs).
import { randomBytes } from 'node:crypto';
import { threadId } from 'node:worker_threads';

const GIVEN = /^[\w.:@/+=-]{1,128}$/;
const PREFIX = `${randomBytes(4).toString('hex')}${threadId ? `.${threadId}` : ''}-`;
let counter = 0;

export function requestId(given: string | undefined): string {
  if (given !== undefined && GIVEN.test(given)) return given;
  return PREFIX + (++counter).toString(36);
}
