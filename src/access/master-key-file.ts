// The embedded (PGlite) development mode keeps its own master key in
// DATA_DIR/authz-master.key, so one command still starts everything. The file
// is created once, exclusively, with mode 0600.
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DomainError } from '../core/errors.ts';
import { generateMasterKey, parseMasterKeys, type MasterKeys } from './crypto.ts';

export const MASTER_KEY_FILE = 'authz-master.key';

/** Reads DATA_DIR/authz-master.key, creating it (mode 0600) when absent. */
export function loadOrCreateMasterKeyFile(dataDir: string): { keys: MasterKeys; file: string; created: boolean } {
  const dir = resolve(dataDir);
  const file = join(dir, MASTER_KEY_FILE);
  mkdirSync(dir, { recursive: true });
  let created = false;
  try {
    writeFileSync(file, `${generateMasterKey('embedded')}\n`, { flag: 'wx', mode: 0o600 });
    created = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // A copied data directory may have lost the mode; a key readable by others is tightened, not trusted silently.
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  const text = readFileSync(file, 'utf8').trim();
  try {
    return { keys: parseMasterKeys(text), file, created };
  } catch (err) {
    throw new DomainError('unavailable', `${file}: ${(err as Error).message}`, { code: 'MASTER_KEY_MISSING', cause: err });
  }
}
