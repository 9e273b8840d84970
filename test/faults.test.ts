// The fault suite's short variants (npm run faults runs the long ones and
// prints the table): real upstreams, a second PostgreSQL cluster and a second
// redis-server on loopback, on both listeners. Each scenario asserts what it
// measured (see bench/faults-lib.ts for the rules each checks).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LISTENERS } from './support/env.ts';
import { flapping, killOneOfThree, killedMidResponse, line, neverAnswers, postgresOutage, redisOutage, shutdownInFlight, soak, type FaultResult } from '../bench/faults-lib.ts';

function check(r: FaultResult): void {
  assert.ok(r.ok, line(r));
}

for (const server of LISTENERS) {
  describe(`fault suite (${server} listener)`, () => {
    it('an upstream killed mid-response: the client sees a cut, the next request is served', async () => {
      const r = await killedMidResponse(server);
      assert.equal(r.measured.client, 'connection cut');
      check(r);
    });
    it('an upstream that accepts and never answers: bounded by the request timeout, then ejected', async () => check(await neverAnswers(server)));
    it('a flapping instance beside a stable one: no request fails', async () => check(await flapping(server, 2)));
    it('killing one of three instances (SIGKILL) under 32 concurrent clients per node (two nodes, Redis): at most one failed connect per node, ejected on both', async () => {
      const r = await killOneOfThree(server, 3);
      check(r);
      assert.equal(r.measured.client_errors, 0);
    });
    it('PostgreSQL stopped: known instances keep serving, registrations get 503 with nothing written, recovery without restart', async () => check(await postgresOutage(server, 2)));
    it('Redis stopped and restarted: node-local meanwhile, shared again after', async () => check(await redisOutage(server)));
    it('shutdown with 100 slow requests in flight: zero dropped', async () => check(await shutdownInFlight(server, 100)));
    // Samples are taken after a full collection (between collections, memory
    // measures when V8 last collected); npm run faults -- --soak 600 runs it longer.
    it('a 30 s soak at half capacity: no failures; after warm-up, RSS within 25% and the live heap within 8% of the first sample', async () => check(await soak(server, 30, 10, 0.25, 0.08)));
  });
}
