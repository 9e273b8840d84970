// Deployment manifests: each kustomize overlay rendered with `kubectl kustomize` and every
// object checked against the Kubernetes schemas (kubernetes-models) plus the properties an
// operator relies on; the Compose file, its nginx load balancer and the Dockerfile checked
// structurally (no container engine here); the demo service run against a real node.
import { kubectlPath } from './support/kubectl.ts';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DockerfileParser } from 'dockerfile-ast';
import { request } from 'undici';
import { parse, parseAllDocuments } from 'yaml';
import { PREFIX, VARIABLES } from '../src/config/index.ts';
import { freshDatabases, PG_HOST, PG_PORT, PG_USER, startTestNode, type TestDatabases, type TestNode } from './support/env.ts';
import { typeCheckObjects, validateWithModels, type K8sObject } from './support/manifests.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const deployDir = join(root, 'deploy');

// Variables the access plane adds (its configuration table); the rest must be ones the
// config module reads, so a misspelt name in a manifest fails here.
const ACCESS_PLANE_VARIABLES = ['AUTHZ_MASTER_KEYS', 'REDIS_URL'];
const KNOWN = new Set([...VARIABLES.map((v) => PREFIX + v.name), ...ACCESS_PLANE_VARIABLES.map((n) => PREFIX + n)]);
const SECRET_KEYS = ['UTILMETA_PROXY_DB_PASSWORD', 'UTILMETA_PROXY_AUTHZ_MASTER_KEYS', 'UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY'];

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;

// ---- Kubernetes -------------------------------------------------------------------------

let k8sCopy = '';
const rendered = new Map<string, K8sObject[]>();

function render(overlay: string): K8sObject[] {
  const r = spawnSync(kubectlPath(), ['kustomize', join(k8sCopy, 'overlays', overlay)], { encoding: 'utf8' });
  if (r.error) throw new Error(`kubectl is needed to render the manifests: ${r.error.message}`);
  assert.equal(r.status, 0, `kubectl kustomize overlays/${overlay}: ${r.stderr}`);
  const docs = parseAllDocuments(r.stdout);
  for (const d of docs) assert.deepEqual(d.errors, [], `overlays/${overlay}: YAML errors`);
  return docs.map((d) => d.toJS() as K8sObject).filter(Boolean);
}

const labelOf = (overlay: string, o: K8sObject) => `${overlay}: ${o.kind}/${o.metadata?.name}`;
const find = (objs: K8sObject[], kind: string, name?: string): Any[] => objs.filter((o) => o.kind === kind && (!name || o.metadata.name === name || o.metadata.name.startsWith(`${name}-`)));
const one = (objs: K8sObject[], kind: string, name: string): Any => {
  const found = find(objs, kind, name);
  assert.equal(found.length, 1, `exactly one ${kind} ${name}`);
  return found[0];
};
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

async function schemaErrors(overlay: string, objs: K8sObject[]): Promise<string[]> {
  const items = objs.map((obj) => ({ label: labelOf(overlay, obj), obj }));
  return [...(await validateWithModels(items)), ...typeCheckObjects(items)];
}

describe('Kubernetes manifests', () => {
  before(() => {
    // A copy, so the production overlay's secrets.env can come from its committed template.
    k8sCopy = mkdtempSync(join(tmpdir(), 'umk8s-'));
    cpSync(join(deployDir, 'kubernetes'), k8sCopy, { recursive: true });
    cpSync(join(k8sCopy, 'overlays/production/secrets.env.example'), join(k8sCopy, 'overlays/production/secrets.env'));
    for (const overlay of ['dev', 'production']) rendered.set(overlay, render(overlay));
  });
  after(() => rmSync(k8sCopy, { recursive: true, force: true }));

  it('every object of both overlays passes the Kubernetes schemas, unknown fields included', async () => {
    for (const [overlay, objs] of rendered) {
      assert.ok(objs.length >= 10, `${overlay} renders the full set`);
      const kinds = new Set(objs.map((o) => `${o.apiVersion} ${o.kind}`));
      for (const k of ['apps/v1 Deployment', 'v1 Service', 'v1 ConfigMap', 'v1 Secret', 'policy/v1 PodDisruptionBudget', 'autoscaling/v2 HorizontalPodAutoscaler', 'networking.k8s.io/v1 NetworkPolicy', 'monitoring.coreos.com/v1 ServiceMonitor']) {
        assert.ok(kinds.has(k), `${overlay} has a ${k}`);
      }
      assert.deepEqual(await schemaErrors(overlay, objs), [], `${overlay}: schema errors`);
    }
  });

  it('the schema check rejects a misspelt field, a wrong type and an unknown kind', async () => {
    const objs = structuredClone(rendered.get('production')!);
    const dep = one(objs, 'Deployment', 'utilmeta-proxy');
    dep.spec.template.spec.containers[0].readinessProbe.periodSecond = 5;
    dep.spec.replicas = '3';
    const monitor = one(objs, 'ServiceMonitor', 'utilmeta-proxy');
    monitor.spec.endpoints[0].prot = 'metrics';
    objs.push({ apiVersion: 'apps/v1', kind: 'Deploymnet', metadata: { name: 'typo' } });
    const errors = (await schemaErrors('production', objs)).join('\n');
    assert.match(errors, /periodSecond/);
    assert.match(errors, /replicas/);
    assert.match(errors, /'prot'|"prot"/);
    assert.match(errors, /Deploymnet/);
  });

  for (const overlay of ['dev', 'production']) {
    it(`${overlay}: the proxy Deployment is replicated, probed, drained, bounded and restricted`, () => {
      const objs = rendered.get(overlay)!;
      const dep = one(objs, 'Deployment', 'utilmeta-proxy');
      const config = one(objs, 'ConfigMap', 'utilmeta-proxy-config');
      const pod = dep.spec.template.spec;
      assert.ok(dep.spec.replicas >= 2, 'at least two replicas');
      assert.equal(dep.spec.strategy.rollingUpdate.maxUnavailable, 0, 'a rolling update never removes a serving pod first');
      assert.ok(matches(dep.spec.selector.matchLabels, dep.spec.template.metadata.labels));

      const proxy = pod.containers.find((c: Any) => c.name === 'proxy');
      assert.deepEqual(proxy.args, ['start']);
      const http = proxy.ports.find((p: Any) => p.name === 'http');
      assert.equal(String(http.containerPort), config.data.UTILMETA_PROXY_BIND_PORT, 'the http port is the one the node binds');
      assert.equal(config.data.UTILMETA_PROXY_BIND_HOST, '0.0.0.0');
      assert.equal(proxy.readinessProbe.httpGet.path, '/api/readyz');
      assert.equal(proxy.livenessProbe.httpGet.path, '/api/healthz');
      assert.equal(proxy.readinessProbe.httpGet.port, 'http');
      assert.equal(proxy.livenessProbe.httpGet.port, 'http');
      const preStop = proxy.lifecycle.preStop.exec.command as string[];
      assert.equal(preStop[0], 'sleep');
      const drainSeconds = Number(preStop[1]);
      assert.ok(drainSeconds > 0 && drainSeconds < pod.terminationGracePeriodSeconds, 'the preStop sleep fits in the grace period, leaving time for the SIGTERM drain');

      const migrate = pod.initContainers.find((c: Any) => c.name === 'migrate');
      assert.ok(migrate, 'an init container migrates before the node starts');
      assert.deepEqual(migrate.args, ['migrate']);
      assert.equal(migrate.image, proxy.image, 'the same image migrates and serves');

      assert.equal(pod.securityContext.runAsNonRoot, true);
      assert.ok(pod.securityContext.runAsUser > 0);
      assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
      assert.equal(pod.automountServiceAccountToken, false);
      for (const c of [...pod.containers, ...pod.initContainers]) {
        assert.equal(c.securityContext.readOnlyRootFilesystem, true, `${c.name}: read-only root`);
        assert.equal(c.securityContext.allowPrivilegeEscalation, false, `${c.name}: no privilege escalation`);
        assert.deepEqual(c.securityContext.capabilities.drop, ['ALL'], `${c.name}: drops all capabilities`);
        for (const k of ['requests', 'limits']) for (const r of ['cpu', 'memory']) assert.ok(c.resources?.[k]?.[r], `${c.name}: resources.${k}.${r}`);
        for (const ref of c.envFrom) {
          if (ref.configMapRef) assert.equal(find(objs, 'ConfigMap').filter((m) => m.metadata.name === ref.configMapRef.name).length, 1, `${c.name}: ConfigMap ${ref.configMapRef.name} exists`);
          if (ref.secretRef) assert.equal(find(objs, 'Secret').filter((s) => s.metadata.name === ref.secretRef.name).length, 1, `${c.name}: Secret ${ref.secretRef.name} exists`);
        }
      }
      const dataMount = proxy.volumeMounts.find((m: Any) => m.mountPath === config.data.UTILMETA_PROXY_DATA_DIR);
      assert.ok(dataMount, 'DATA_DIR is a mounted volume');
      assert.ok(pod.volumes.find((v: Any) => v.name === dataMount.name).emptyDir, 'DATA_DIR is an emptyDir');
    });

    it(`${overlay}: Service, Secret, PDB, HPA, NetworkPolicy and ServiceMonitor fit the Deployment`, () => {
      const objs = rendered.get(overlay)!;
      const dep = one(objs, 'Deployment', 'utilmeta-proxy');
      const podLabels = dep.spec.template.metadata.labels;
      const proxy = dep.spec.template.spec.containers[0];

      const svc = one(objs, 'Service', 'utilmeta-proxy');
      assert.ok(matches(svc.spec.selector, podLabels), 'the Service selects the proxy pods');
      const names = new Set(proxy.ports.map((p: Any) => p.name));
      for (const p of svc.spec.ports) assert.ok(names.has(p.targetPort), `Service port ${p.name} targets a named container port`);

      const secret = one(objs, 'Secret', 'utilmeta-proxy-secrets');
      const secretKeys = Object.keys({ ...secret.data, ...secret.stringData });
      for (const k of SECRET_KEYS) assert.ok(secretKeys.includes(k), `the Secret carries ${k}`);

      const config = one(objs, 'ConfigMap', 'utilmeta-proxy-config');
      for (const k of [...Object.keys(config.data), ...secretKeys]) assert.ok(KNOWN.has(k), `${k} is a variable the proxy reads`);
      for (const k of SECRET_KEYS) assert.ok(!(k in config.data), `${k} is not in the ConfigMap`);

      const pdb = one(objs, 'PodDisruptionBudget', 'utilmeta-proxy');
      assert.ok(matches(pdb.spec.selector.matchLabels, podLabels), 'the PDB covers the proxy pods');
      assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < dep.spec.replicas, 'one pod can always be drained, one always serves');

      const hpa = one(objs, 'HorizontalPodAutoscaler', 'utilmeta-proxy');
      assert.equal(hpa.apiVersion, 'autoscaling/v2');
      assert.deepEqual([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', dep.metadata.name]);
      assert.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= hpa.spec.maxReplicas);
      assert.ok(hpa.spec.minReplicas <= dep.spec.replicas);

      const np = one(objs, 'NetworkPolicy', 'utilmeta-proxy');
      assert.ok(matches(np.spec.podSelector.matchLabels, podLabels));
      assert.ok(np.spec.ingress.some((r: Any) => r.ports.some((p: Any) => p.port === 8888)), 'callers may reach port 8888');
      assert.deepEqual(np.spec.policyTypes, ['Ingress', 'Egress']);

      const monitor = one(objs, 'ServiceMonitor', 'utilmeta-proxy');
      assert.ok(matches(monitor.spec.selector.matchLabels, svc.metadata.labels), 'the ServiceMonitor selects the proxy Service');
      assert.ok(find(objs, 'Service').filter((s) => matches(monitor.spec.selector.matchLabels, s.metadata.labels)).length === 1, 'and only it');
      const metricsPort = svc.spec.ports.find((p: Any) => p.name === monitor.spec.endpoints[0].port);
      assert.ok(metricsPort, 'its endpoint names a Service port');
      assert.equal(String(metricsPort.port), config.data.UTILMETA_PROXY_METRICS_PORT);
      assert.equal(monitor.spec.endpoints[0].path, '/metrics');

      for (const o of objs) if (o.kind !== 'Namespace') assert.ok(o.metadata.namespace, `${labelOf(overlay, o)} has a namespace`);
    });
  }

  it('every pod in both overlays meets the restricted Pod Security Standard its namespace enforces', () => {
    for (const [overlay, objs] of rendered) {
      const ns = find(objs, 'Namespace');
      assert.equal(ns.length, 1);
      assert.equal(ns[0].metadata.labels['pod-security.kubernetes.io/enforce'], 'restricted');
      for (const dep of find(objs, 'Deployment')) {
        const pod = dep.spec.template.spec;
        const label = labelOf(overlay, dep);
        assert.equal(pod.securityContext?.runAsNonRoot, true, `${label}: runAsNonRoot`);
        assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', `${label}: seccomp`);
        for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
          assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${label} ${c.name}: allowPrivilegeEscalation`);
          assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${label} ${c.name}: drop ALL`);
          assert.ok(c.resources?.limits?.memory, `${label} ${c.name}: memory limit`);
        }
      }
    }
  });

  it('production pins the image tag and runs in production mode; dev runs the local build', () => {
    const prod = rendered.get('production')!;
    for (const c of one(prod, 'Deployment', 'utilmeta-proxy').spec.template.spec.containers.concat(one(prod, 'Deployment', 'utilmeta-proxy').spec.template.spec.initContainers)) {
      const [name, digest] = String(c.image).split('@');
      const slash = name.lastIndexOf('/');
      const colon = name.lastIndexOf(':');
      const tag = colon > slash ? name.slice(colon + 1) : undefined;
      assert.ok(/^sha256:[0-9a-f]{64}$/.test(digest ?? '') || (tag && /^v?\d+\.\d+\.\d+(-[\w.]+)?$/.test(tag)), `${c.name}: ${c.image} is pinned to a release tag or digest`);
    }
    const config = one(prod, 'ConfigMap', 'utilmeta-proxy-config');
    assert.equal(config.data.UTILMETA_PROXY_PRODUCTION, 'true');
    assert.equal(config.data.UTILMETA_PROXY_PRIVATE, 'true');
    assert.ok(one(prod, 'Deployment', 'utilmeta-proxy').spec.replicas >= 3);
    const dev = rendered.get('dev')!;
    assert.match(one(dev, 'Deployment', 'utilmeta-proxy').spec.template.spec.containers[0].image, /:local$/);
  });
});

// ---- Compose ----------------------------------------------------------------------------

describe('Compose cluster', () => {
  const composeText = readFileSync(join(deployDir, 'compose.yaml'), 'utf8');
  const compose = parse(composeText, { merge: true }) as Any;
  const services = compose.services as Record<string, Any>;
  const nodes = Object.entries(services).filter(([, s]) => Array.isArray(s.command) && s.command[0] === 'start').map(([n]) => n);

  it('has PostgreSQL, Redis, a one-shot migration, two or more nodes, one load balancer and the demo', () => {
    for (const name of ['postgres', 'redis', 'migrate', 'lb', 'demo']) assert.ok(services[name], `service ${name}`);
    assert.ok(nodes.length >= 2, 'at least two proxy nodes');
    assert.deepEqual(services.migrate.command, ['migrate']);
    assert.equal(services.migrate.restart, 'no');
    for (const n of nodes) assert.equal(services[n].image, services.migrate.image, `${n} runs the same image as migrate`);
    assert.equal(compose.version, undefined, 'no obsolete version key');
  });

  it('every long-running service has a healthcheck and waits on what it needs', () => {
    for (const [name, s] of Object.entries(services)) {
      if (name === 'migrate') continue;
      assert.ok(Array.isArray(s.healthcheck?.test) && s.healthcheck.test[0] === 'CMD', `${name} has a healthcheck`);
    }
    for (const n of nodes) {
      const dep = services[n].depends_on;
      assert.equal(dep.postgres.condition, 'service_healthy', `${n} waits for PostgreSQL`);
      assert.equal(dep.redis.condition, 'service_healthy', `${n} waits for Redis`);
      assert.equal(dep.migrate.condition, 'service_completed_successfully', `${n} waits for the migration`);
      assert.match(services[n].healthcheck.test.join(' '), /\/api\/healthz/);
      assert.equal(services[n].read_only, true, `${n}: read-only root filesystem`);
      assert.deepEqual(services[n].cap_drop, ['ALL']);
    }
    assert.equal(services.migrate.depends_on.postgres.condition, 'service_healthy');
    for (const n of nodes) assert.equal(services.lb.depends_on[n]?.condition, 'service_healthy', `lb waits for ${n}`);
    assert.equal(services.demo.depends_on.lb.condition, 'service_healthy');
  });

  it('publishes one port, on loopback, from the load balancer to every node', () => {
    const published = Object.entries(services).filter(([, s]) => s.ports?.length);
    assert.deepEqual(published.map(([n]) => n), ['lb']);
    assert.equal(services.lb.ports.length, 1);
    const [host, hostPort, containerPort] = String(services.lb.ports[0]).split(':');
    assert.equal(host, '127.0.0.1');
    assert.ok(Number(hostPort) > 0);
    const mount = services.lb.volumes.find((v: string) => v.endsWith(':/etc/nginx/conf.d/default.conf:ro'));
    assert.ok(mount, 'the nginx config is mounted');
    const conf = readFileSync(join(deployDir, mount.split(':')[0]), 'utf8');
    assert.match(conf, new RegExp(`listen\\s+${containerPort};`), 'nginx listens on the published container port');
    const upstreams = [...conf.matchAll(/^\s*server\s+([\w-]+):(\d+)\b/gm)].map((m) => `${m[1]}:${m[2]}`).sort();
    assert.deepEqual(upstreams, nodes.map((n) => `${n}:8888`).sort(), 'the upstream lists every node at its port');
    for (const n of nodes) assert.equal(services[n].environment.UTILMETA_PROXY_BASE_URL, `http://lb:${containerPort}/api`, `${n} advertises the load balancer`);
    assert.equal(services.demo.environment.UTILMETA_PROXY_BASE_URL, `http://lb:${containerPort}/api`, 'the demo registers through the load balancer');
  });

  it('takes every secret from the operator\'s env file, and sets only known variables', () => {
    const example = readFileSync(join(deployDir, '.env.example'), 'utf8');
    const offered = new Set([...example.matchAll(/^([A-Z0-9_]+)=/gm)].map((m) => m[1]));
    const referenced = new Set([...composeText.matchAll(/\$\{([A-Z0-9_]+)/g)].map((m) => m[1]));
    for (const v of referenced) assert.ok(offered.has(v), `.env.example offers ${v}`);
    for (const k of ['UTILMETA_PROXY_DB_PASSWORD', 'UTILMETA_PROXY_AUTHZ_MASTER_KEYS']) {
      assert.match(example, new RegExp(`^${k}=$`, 'm'), `${k} ships empty in the template`);
      assert.match(composeText, new RegExp(`\\$\\{${k}:\\?`), `compose refuses to start without ${k}`);
    }
    for (const n of [...nodes, 'migrate']) {
      const env = services[n].environment;
      for (const k of Object.keys(env)) assert.ok(KNOWN.has(k), `${n}: ${k} is a variable the proxy reads`);
      for (const k of SECRET_KEYS) if (k in env) assert.match(String(env[k]), /^\$\{/, `${n}: ${k} comes from the env file`);
    }
  });

  it('docker-compose accepts the file (config, no engine needed)', () => {
    const probe = spawnSync('docker-compose', ['version'], { encoding: 'utf8' });
    // A missing tool fails the test (.ci/run installs it): a skip would hide the check.
    assert.ok(!probe.error, 'docker-compose is not installed (apt-get install docker-compose; .ci/run installs it)');
    const dir = mkdtempSync(join(tmpdir(), 'umcompose-'));
    try {
      cpSync(deployDir, dir, { recursive: true, filter: (p) => !p.includes('kubernetes') });
      const env = `${readFileSync(join(deployDir, '.env.example'), 'utf8')}\nUTILMETA_PROXY_DB_PASSWORD=test-password\nUTILMETA_PROXY_AUTHZ_MASTER_KEYS=k1:${Buffer.alloc(32, 7).toString('base64')}\n`;
      writeFileSync(join(dir, '.env'), env);
      const cfg = spawnSync('docker-compose', ['-f', join(dir, 'compose.yaml'), 'config'], { encoding: 'utf8', cwd: dir });
      assert.equal(cfg.status, 0, cfg.stderr);
      const resolved = parse(cfg.stdout) as Any;
      assert.equal(resolved.services['proxy-1'].environment.UTILMETA_PROXY_DB_PASSWORD, 'test-password');
      rmSync(join(dir, '.env'));
      const missing = spawnSync('docker-compose', ['-f', join(dir, 'compose.yaml'), 'config', '-q'], { encoding: 'utf8', cwd: dir });
      assert.notEqual(missing.status, 0, 'refuses to run without the secrets');
      assert.match(missing.stderr, /UTILMETA_PROXY_DB_PASSWORD/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- Dockerfile -------------------------------------------------------------------------

describe('Dockerfile', () => {
  const doc = DockerfileParser.parse(readFileSync(join(root, 'Dockerfile'), 'utf8'));
  const stages = doc.getFROMs();
  const runtimeStart = stages[stages.length - 1].getRange().start.line;
  const ins = doc.getInstructions().map((i) => ({ keyword: i.getKeyword(), text: i.getArgumentsContent() ?? '', line: i.getRange().start.line, flags: i instanceof Object && 'getFlags' in i ? (i as Any).getFlags().map((f: Any) => `${f.getName()}=${f.getValue()}`) : [] }));
  const runtime = ins.filter((i) => i.line > runtimeStart);
  const build = ins.filter((i) => i.line < runtimeStart);

  it('builds with dev dependencies and runs with production ones, the compiled dist/ and the launcher', () => {
    assert.equal(stages.length, 2, 'two stages');
    assert.equal(stages[0].getBuildStage(), 'build');
    assert.ok(build.some((i) => i.keyword === 'RUN' && /\bnpm ci\b/.test(i.text) && !/--omit=dev/.test(i.text)));
    assert.ok(build.some((i) => i.keyword === 'RUN' && /npm run build/.test(i.text)));
    assert.ok(runtime.some((i) => i.keyword === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.text)));
    assert.ok(runtime.some((i) => i.keyword === 'COPY' && i.flags.includes('from=build') && /\/app\/dist\s+\.\/dist/.test(i.text)));
    assert.ok(runtime.some((i) => i.keyword === 'COPY' && /^bin\b/.test(i.text)));
    assert.ok(!runtime.some((i) => i.keyword === 'COPY' && /^src\b/.test(i.text)), 'no TypeScript sources in the runtime image');
    const entry = runtime.find((i) => i.keyword === 'ENTRYPOINT')!;
    assert.deepEqual(JSON.parse(entry.text), ['node', 'bin/utilmeta-proxy.js']);
  });

  it('runs as a non-root uid, writes only to the data volume, exposes the port and stops on SIGTERM', () => {
    const user = runtime.filter((i) => i.keyword === 'USER').at(-1)!;
    assert.match(user.text, /^[1-9]\d*(:\d+)?$/, 'a numeric non-root uid (Kubernetes can verify runAsNonRoot)');
    const env = Object.fromEntries(runtime.filter((i) => i.keyword === 'ENV').flatMap((i) => [...i.text.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1], m[2]])));
    assert.equal(env.UTILMETA_PROXY_BIND_HOST, '0.0.0.0');
    for (const k of Object.keys(env)) if (k.startsWith(PREFIX)) assert.ok(KNOWN.has(k), `${k} is a variable the proxy reads`);
    const volumes = runtime.filter((i) => i.keyword === 'VOLUME').map((i) => i.text);
    assert.ok(volumes.includes(env.UTILMETA_PROXY_DATA_DIR), 'DATA_DIR is a volume');
    assert.ok(runtime.some((i) => i.keyword === 'EXPOSE' && i.text.split(/\s+/).includes(env.UTILMETA_PROXY_BIND_PORT)));
    assert.equal(runtime.find((i) => i.keyword === 'STOPSIGNAL')?.text, 'SIGTERM');
    assert.match(runtime.find((i) => i.keyword === 'HEALTHCHECK')?.text ?? '', /\/api\/healthz/);
  });

  it('.dockerignore keeps out what the build must not see, and nothing it copies', () => {
    const ignore = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', 'dist', '.git', 'utilmeta-proxy.env']) assert.ok(ignore.includes(p), `.dockerignore has ${p}`);
    const copied = ins.filter((i) => i.keyword === 'COPY' && !i.flags.some((f: string) => f.startsWith('from='))).flatMap((i) => i.text.split(/\s+/).slice(0, -1));
    for (const c of copied) assert.ok(!ignore.includes(c), `${c} is copied, so it is not ignored`);
  });
});

// ---- The demo service -------------------------------------------------------------------

describe('demo service (deploy/demo)', () => {
  let dbs: TestDatabases;
  let node: TestNode;
  before(async () => {
    dbs = freshDatabases();
    node = await startTestNode('node', dbs);
  });
  after(async () => {
    await node?.close();
    await dbs?.drop();
  });

  it('writes its instance row, registers with the proxy, and is reachable through discovery', async () => {
    const base = `${node.origin}/api`;
    const child = spawn(process.execPath, [join(deployDir, 'demo/demo-service.mjs')], {
      env: {
        PATH: process.env.PATH ?? '', UTILMETA_PROXY_BASE_URL: base, DEMO_NAME: 'demo-e2e', DEMO_BIND_HOST: '127.0.0.1', DEMO_PORT: '0',
        DEMO_RETRY_SECONDS: '0.2', UTILMETA_OPERATIONS_DB_HOST: PG_HOST, UTILMETA_OPERATIONS_DB_PORT: String(PG_PORT),
        UTILMETA_OPERATIONS_DB_USER: PG_USER, UTILMETA_OPERATIONS_DB_NAME: dbs.opsName,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const registered = await new Promise<Any>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          const j = JSON.parse(line);
          if (j.msg === 'registered') resolve(j);
        });
        void exited.then((code) => reject(new Error(`demo exited ${code}: ${stderr}`)));
      });
      assert.match(registered.address, /^127\.0\.0\.1:\d+$/);
      const list = await request(`${base}/registry?service=demo-e2e`);
      const body = (await list.body.json()) as Any;
      assert.equal(body.services.length, 1);
      assert.equal(body.services[0].instances[0].address, registered.address);
      const hello = await request(`${base}/proxy/hello`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'demo-e2e' } });
      assert.equal(hello.statusCode, 200);
      assert.equal(await hello.body.text(), `hello from demo-e2e at ${registered.address}`);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
