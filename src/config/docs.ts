// The env example and the README variable tables, rendered from VARIABLES so
// the three documents (--help, example, README) cannot drift apart.
// `node --import tsx src/config/docs.ts` rewrites utilmeta-proxy.env.example and
// prints the README tables.
import { writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { PREFIX, VARIABLES } from './index.ts';

const HEADER = `# utilmeta-proxy configuration. Copy to utilmeta-proxy.env (read from the working
# directory, or pass --env-file FILE). Variables set in the process environment win.
# Every variable is optional; the commented value is the default.
`;

/** A default that can be pasted as a value (no prose, placeholders or parentheses). */
const literal = (d: string) => /^[^\s()<>']*$/.test(d) && d !== '';

function groups(): Map<string, typeof VARIABLES> {
  const m = new Map<string, typeof VARIABLES>();
  for (const v of VARIABLES) m.set(v.group, [...(m.get(v.group) ?? []), v]);
  return m;
}

export function renderEnvExample(): string {
  let out = HEADER;
  for (const [group, vars] of groups()) {
    out += `\n# ---- ${group} ----\n`;
    for (const v of vars) {
      out += `# ${v.help}\n`;
      out += literal(v.default) ? `# ${PREFIX}${v.name}=${v.default}\n` : `# ${PREFIX}${v.name}=    # default: ${v.default}\n`;
    }
  }
  return out;
}

export function renderReadmeTables(): string {
  const parts: string[] = [];
  for (const [group, vars] of groups()) {
    parts.push(`**${group}**\n\n| variable | default | meaning |\n|---|---|---|\n${vars.map((v) => `| \`${PREFIX}${v.name}\` | ${v.default} | ${v.help} |`).join('\n')}\n`);
  }
  return parts.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeFileSync(new URL('../../utilmeta-proxy.env.example', import.meta.url), renderEnvExample());
  process.stdout.write(renderReadmeTables());
}
