// npm run bench:authz-data
//
// Costs of the access-plane data layer on this machine's PostgreSQL (loopback):
// scrypt hashing, secret encryption, and authz write transactions (one event
// each) alone and with concurrent writers, which all serialise on authz_state.
// It asserts nothing; it prints numbers.
import { performance } from 'node:perf_hooks';
import { cpus, loadavg } from 'node:os';
import { decryptSecret, encryptSecret, generateAccessKeyId, generateMasterKey, generateSecret, hashPassword, parseMasterKeys, verifyPassword } from '../src/access/crypto.ts';
import { writeAuthz } from '../src/access/store.ts';
import { migratedAuthzDb } from '../test/support/authz.ts';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const f = (n: number) => n.toFixed(2);

async function main() {
  console.log(`node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const hashes: number[] = [];
  let h = '';
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    h = await hashPassword('benchmark-password');
    hashes.push(performance.now() - t0);
  }
  const verifies: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await verifyPassword('benchmark-password', h);
    verifies.push(performance.now() - t0);
  }
  console.log(`scrypt (N=2^15, r=8, p=1): hash p50 ${f(pct(hashes, 50))} ms, verify p50 ${f(pct(verifies, 50))} ms (10 each)`);

  const keys = parseMasterKeys(generateMasterKey('b'));
  const akid = generateAccessKeyId();
  const secret = generateSecret();
  const n = 20000;
  let t0 = performance.now();
  let enc = encryptSecret(keys, akid, secret);
  for (let i = 0; i < n; i++) enc = encryptSecret(keys, akid, secret);
  const encUs = ((performance.now() - t0) * 1000) / n;
  t0 = performance.now();
  for (let i = 0; i < n; i++) decryptSecret(keys, akid, enc);
  const decUs = ((performance.now() - t0) * 1000) / n;
  console.log(`AES-256-GCM secret: encrypt ${f(encUs)} µs, decrypt ${f(decUs)} µs (${n} each)`);

  const t = await migratedAuthzDb();
  try {
    const one = async () =>
      writeAuthz(t.sql, { type: 'CLI' }, async (tx) => {
        await tx.sql`UPDATE authz_state SET audit_retention = audit_retention`;
        tx.event({ action: 'bench', targetType: 'bench', targetId: 1, effect: { n: 1 } });
      });
    for (let i = 0; i < 200; i++) await one(); // warm-up
    const lat: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const s = performance.now();
      await one();
      lat.push(performance.now() - s);
    }
    console.log(`write transaction (lock, 1 row, 1 event, NOTIFY, commit), sequential: p50 ${f(pct(lat, 50))} ms, p99 ${f(pct(lat, 99))} ms (1000)`);
    for (const writers of [4, 8]) {
      const per = 400;
      const s = performance.now();
      await Promise.all(Array.from({ length: writers }, async () => {
        for (let i = 0; i < per; i++) await one();
      }));
      const secs = (performance.now() - s) / 1000;
      console.log(`write transactions, ${writers} concurrent writers (pool ${t.cfg.poolSize}): ${Math.round((writers * per) / secs)} commits/s`);
    }
  } finally {
    await t.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
