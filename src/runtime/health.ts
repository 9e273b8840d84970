// Health wiring of one node: one InstanceHealth (shared over Redis when
// configured), the active prober with its leader lock, the choose-point stage,
// the per-attempt reporting hook, and the optional TTL of unhealthy instances.
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { createClient } from '../db/client.ts';
import type { Database } from '../db/index.ts';
import {
  ActiveHealthChecker, IdempotencyStore, InstanceHealth, PgAdvisoryLeader, RedisLeaderLock, RetryBudgets, SoloLeader, outcomeOf, type LeaderLock,
} from '../health/index.ts';
import type { Redis } from '../redis/index.ts';
import type { RegistryCache } from '../registry/cache.ts';
import type { RegistryStore } from '../registry/store.ts';
import type { RegistrySnapshot } from '../registry/snapshot.ts';
import type { Stage } from '../proxy/chain.ts';
import { healthyInstances } from '../proxy/stages/health.ts';
import type { AttemptHook, RetryPolicy } from '../proxy/upstream.ts';

/** Advisory lock key of the prober's leader election (distinct from migrations'). */
const PROBE_LOCK_KEY = 0x75746d70726f6265n; // "utmprobe"

export interface NodeHealth {
  health: InstanceHealth;
  checker: ActiveHealthChecker | null;
  retryBudgets: RetryBudgets;
  /** Idempotency-Key responses, shared over Redis when configured. */
  idempotency: IdempotencyStore;
  /** The choose-point stage for the discovery and platform chains. */
  stage: Stage;
  onAttempt: AttemptHook;
  /** A retry policy bound to one service's budget; counts the request. */
  retryPolicy(serviceId: string | undefined): RetryPolicy | undefined;
  close(): Promise<void>;
}

export interface HealthWiring {
  config: Config;
  log: Logger;
  db: Database;
  registry: RegistryCache;
  store: RegistryStore;
  /** A command client and a dedicated subscriber, or null without Redis. */
  redis: { client: Redis; subscriber: Redis } | null;
}

export async function startHealth(w: HealthWiring): Promise<NodeHealth> {
  const { config, log, registry } = w;
  const hc = config.health;
  let sizes = serviceSizes(registry.snapshot);
  const health = new InstanceHealth({
    serviceSize: (id) => sizes.get(id) ?? 1,
    outlier: { consecutiveFailures: hc.ejectFailures, baseEjectionMs: hc.ejectBase, maxEjectionMs: hc.ejectBase * 10, maxEjectionPercent: hc.ejectMaxPercent },
    unhealthyAfterMs: hc.unhealthyAfter,
    redis: w.redis ? { ...w.redis, prefix: `utilmeta-proxy:health:${config.db.registryName}` } : undefined,
    log,
    onEvent: (e) => log.info({ health: e }, 'instance health changed'),
  });
  await health.start();
  const retain = (s: RegistrySnapshot) => {
    sizes = serviceSizes(s);
    const ids = new Set<string>();
    for (const svc of s.services) for (const i of svc.instances) ids.add(i.id);
    health.retain(ids);
  };
  registry.onSwap(retain);

  let checker: ActiveHealthChecker | null = null;
  let leaderSql: ReturnType<typeof createClient> | null = null;
  let ttlTimer: NodeJS.Timeout | null = null;
  if (hc.probeInterval > 0) {
    let leader: LeaderLock;
    if (w.redis) {
      leader = new RedisLeaderLock(w.redis.client, { key: `utilmeta-proxy:health:${config.db.registryName}:leader`, nodeId: health.nodeId, soloWhenUnreachable: true });
    } else if (!w.db.embedded && config.db.host) {
      leaderSql = createClient({ host: config.db.host, port: config.db.port, user: config.db.user, password: config.db.password, database: config.db.registryName, ssl: config.db.ssl, max: 1 }, log);
      leader = new PgAdvisoryLeader(leaderSql, { lockKey: PROBE_LOCK_KEY, log });
    } else {
      leader = new SoloLeader();
    }
    checker = new ActiveHealthChecker({
      health, leader,
      targets: () => allInstances(registry.snapshot),
      intervalMs: hc.probeInterval, timeoutMs: hc.probeTimeout, path: hc.probePath ?? undefined,
      unhealthyThreshold: hc.unhealthyThreshold, healthyThreshold: hc.healthyThreshold,
    });
    await checker.start();
    if (hc.instanceTtl > 0) {
      // Deleting is an operator's decision unless a TTL says otherwise; only the
      // probing node does it, so the cluster deletes each instance once.
      ttlTimer = setInterval(() => {
        if (!checker?.isLeader) return;
        const now = Date.now();
        for (const inst of allInstances(registry.snapshot)) {
          const h = health.healthOf(inst.id, now);
          if (h.state === 'unhealthy' && h.since !== null && now - h.since >= hc.unhealthyAfter + hc.instanceTtl) {
            void w.store.deregister(inst.id).then((gone) => {
              if (gone) log.warn({ instance: inst.id, service: inst.serviceId, since: h.since }, 'unhealthy instance deregistered (HEALTH_INSTANCE_TTL)');
              return registry.refresh();
            }).catch((err) => log.warn({ err, instance: inst.id }, 'could not deregister an unhealthy instance'));
          }
        }
      }, Math.min(hc.probeInterval, 60_000));
      ttlTimer.unref();
    }
  }

  const retryBudgets = new RetryBudgets();
  const idempotency = new IdempotencyStore({
    redis: w.redis?.client, prefix: `utilmeta-proxy:idem:${config.db.registryName}:`, log,
    // The in-flight marker must outlive the longest request.
    inflightTtlMs: Math.ceil(config.maxTimeout * 1000) + 10_000,
  });
  return {
    health, checker, retryBudgets, idempotency,
    stage: healthyInstances(health),
    onAttempt: (target, status, error, retryAfterMs) => {
      if (target.instanceId === undefined || target.serviceId === undefined) return;
      const inst = { id: target.instanceId, serviceId: target.serviceId };
      health.report(inst, outcomeOf(status, error), error?.message ?? (status !== null ? `status ${status}` : ''));
      if (status === 503 && retryAfterMs !== null && retryAfterMs > 0) health.holdOff(inst, retryAfterMs, `answered 503 with Retry-After (${Math.ceil(retryAfterMs / 1000)}s)`);
    },
    retryPolicy: (serviceId) => {
      if (serviceId === undefined) return undefined;
      const budget = retryBudgets.of(serviceId);
      budget.onRequest(Date.now());
      return { allowRetry: () => budget.tryRetry(Date.now()) };
    },
    async close() {
      if (ttlTimer) clearInterval(ttlTimer);
      await checker?.stop().catch(() => {});
      await health.stop().catch(() => {});
      await leaderSql?.end({ timeout: 2 }).catch(() => {});
    },
  };
}

function serviceSizes(s: RegistrySnapshot): Map<string, number> {
  const m = new Map<string, number>();
  for (const svc of s.services) m.set(svc.id, svc.instances.length);
  return m;
}

function* allInstances(s: RegistrySnapshot) {
  for (const svc of s.services) for (const i of svc.instances) yield { id: i.id, serviceId: i.serviceId, baseUrl: i.baseUrl, opsApi: i.opsApi };
}
