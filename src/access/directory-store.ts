// The directory's seam onto the authz write protocol: one transaction that
// first locks authz_state (serializing every authz writer), runs the change,
// then inserts its events, so a failed change leaves no event behind.
import type postgres from 'postgres';

export interface AuthzEventInput {
  actorType: 'USER' | 'APP' | 'SYSTEM' | 'PLATFORM' | 'CLI';
  actorId: string | null;
  actorName: string | null;
  credential: string | null;
  clientIp: string | null;
  requestId: string | null;
  action: string;
  targetType: string;
  targetId: string;
  serviceId: number | null;
  effect: Record<string, unknown>;
  before: unknown;
  after: unknown;
}

export interface WrittenEvent {
  seq: number;
  action: string;
  effect: Record<string, unknown>;
}

export async function writeTransaction<T>(
  sql: postgres.Sql,
  fn: (tx: postgres.TransactionSql, emit: (e: AuthzEventInput) => void) => Promise<T>,
): Promise<{ result: T; events: WrittenEvent[] }> {
  return (await sql.begin(async (tx) => {
    await tx`SELECT seq FROM authz_state FOR UPDATE`;
    const pending: AuthzEventInput[] = [];
    const result = await fn(tx, (e) => pending.push(e));
    const events: WrittenEvent[] = [];
    for (const e of pending) {
      const [row] = await tx<{ seq: string }[]>`
        INSERT INTO authz_event (actor_type, actor_id, actor_name, credential, client_ip, request_id,
                                 action, target_type, target_id, service_id, effect, before, after)
        VALUES (${e.actorType}, ${e.actorId}, ${e.actorName}, ${e.credential}, ${e.clientIp}, ${e.requestId},
                ${e.action}, ${e.targetType}, ${e.targetId}, ${e.serviceId}, ${tx.json(e.effect as postgres.JSONValue)},
                ${e.before === null ? null : tx.json(e.before as postgres.JSONValue)},
                ${e.after === null ? null : tx.json(e.after as postgres.JSONValue)})
        RETURNING seq`;
      events.push({ seq: Number(row!.seq), action: e.action, effect: e.effect });
    }
    return { result, events };
  })) as { result: T; events: WrittenEvent[] };
}
