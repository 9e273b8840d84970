// WebSocket relay numbers on this machine, both listeners: round-trip latency of
// small messages (one client, sequential) and echo throughput (many clients,
// pipelined), through the proxy and straight to the upstream for comparison.
// Everything runs in this process on loopback, so absolute numbers include the
// clients' and the upstream's own work. Run: node --import tsx bench/websocket.ts
import { loadavg } from 'node:os';
import WebSocket from 'ws';
import { freshDatabases, startTestNode } from '../test/support/env.ts';
import { insertInstanceResource, registrationBody } from '../test/support/ops.ts';
import { startWsUpstream } from '../test/support/ws-upstream.ts';
import { request } from 'undici';

const ROUND_TRIPS = Number(process.env.WS_BENCH_ROUND_TRIPS ?? 3000);
const CLIENTS = Number(process.env.WS_BENCH_CLIENTS ?? 32);
const PER_CLIENT = Number(process.env.WS_BENCH_PER_CLIENT ?? 1000);
const WINDOW = 16;

function openWs(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function latency(url: string, headers: Record<string, string>): Promise<{ p50: number; p99: number }> {
  const ws = await openWs(url, headers);
  const times: number[] = [];
  const payload = Buffer.alloc(64, 1);
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const t = performance.now();
    await new Promise<void>((r) => {
      ws.once('message', () => r());
      ws.send(payload);
    });
    times.push(performance.now() - t);
  }
  ws.close();
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(times.length * 0.5)], p99: times[Math.floor(times.length * 0.99)] };
}

async function throughput(url: string, headers: Record<string, string>): Promise<number> {
  const sockets = await Promise.all(Array.from({ length: CLIENTS }, () => openWs(url, headers)));
  const payload = Buffer.alloc(256, 2);
  const t = performance.now();
  await Promise.all(sockets.map((ws) => new Promise<void>((resolve) => {
    let sent = 0;
    let got = 0;
    ws.on('message', () => {
      got++;
      if (sent < PER_CLIENT) {
        sent++;
        ws.send(payload);
      }
      if (got === PER_CLIENT) resolve();
    });
    for (; sent < WINDOW; sent++) ws.send(payload);
  })));
  const secs = (performance.now() - t) / 1000;
  for (const ws of sockets) ws.close();
  return (CLIENTS * PER_CLIENT) / secs;
}

const up = await startWsUpstream();
const direct = `ws://${up.address}/api/echo`;
console.log(`load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')} (2 cores shared)`);
console.log('| path | listener | round trip p50 | p99 | echo msgs/s (' + CLIENTS + ' clients, 256 B) |');
console.log('|---|---|---|---|---|');
const d = await latency(direct, {});
const dt = await throughput(direct, {});
console.log(`| direct to upstream | — | ${d.p50.toFixed(3)} ms | ${d.p99.toFixed(3)} ms | ${Math.round(dt)} |`);
for (const server of ['uws', 'node'] as const) {
  const dbs = freshDatabases();
  const node = await startTestNode(server, dbs, { UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_LOG_LEVEL: 'warn' });
  try {
    const res = await insertInstanceResource(node.db.ops, { service: 'chat', address: up.address });
    const r = await request(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: 'chat', address: up.address, instanceId: res.id })) });
    await r.body.text();
    const url = `${node.origin.replace('http', 'ws')}/api/proxy/echo`;
    const h = { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'chat' };
    const l = await latency(url, h);
    const t = await throughput(url, h);
    console.log(`| through the proxy | ${server} | ${l.p50.toFixed(3)} ms | ${l.p99.toFixed(3)} ms | ${Math.round(t)} |`);
  } finally {
    await node.close();
    await dbs.drop();
  }
}
console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
await up.close();
