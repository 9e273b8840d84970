// Trust check for supervisor (platform) URLs, UtilMeta's `check_supervisor`
// (spec §3.1 "Trust check", `py:utilmeta/ops/config.py:925-941`).
//
// A SupervisorClient refuses to talk to a URL that fails this check, before any request is sent:
// in the worst case an attacker with write access to the shared ops DB rewrites
// `utilmeta_supervisor.base_url` to a hostile address, and this check is what stops the node key,
// cluster key and (encrypted) bodies from going there.

export interface TrustPolicy {
  /** UTILMETA_PROXY_PRODUCTION: requires https/wss and drops the loopback hosts. */
  production: boolean;
  /** UTILMETA_PROXY_TRUSTED_HOSTS: extra trusted hosts (their subdomains are trusted too). */
  trustedHosts: readonly string[];
}

/** Always trusted, like UtilMeta's `trusted_hosts` which always gets `utilmeta.com` appended. */
export const DEFAULT_TRUSTED_HOST = 'utilmeta.com';
/** Trusted only outside production (the Python proxy used `['127.0.0.1']`; `localhost` is the same machine). */
export const DEV_TRUSTED_HOSTS: readonly string[] = ['127.0.0.1', 'localhost'];

export class UntrustedSupervisorError extends Error {
  override readonly name = 'UntrustedSupervisorError';
  constructor(
    readonly url: string,
    readonly reason: string,
  ) {
    super(`untrusted supervisor URL ${JSON.stringify(url)}: ${reason}`);
  }
}

/** Lower-cased host without IPv6 brackets or a trailing dot (`Example.COM.` and `example.com` are one host). */
function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  return h.replace(/\.+$/, '');
}

/**
 * A configured entry as a bare host. Entries may be written as `host`, `.host`, `host:port` or a
 * URL; only the host counts, as in UtilMeta where trusted_hosts are compared with the hostname.
 */
function entryHost(entry: string): string {
  let e = entry.trim();
  if (!e) return '';
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(e)) {
    try {
      return normalizeHost(new URL(e).hostname);
    } catch {
      return '';
    }
  }
  e = e.replace(/^\.+/, '').replace(/\/.*$/, '');
  // host:port (but not a bare IPv6 address, which has several colons)
  const m = /^(\[[^\]]+\]|[^:]+):\d+$/.exec(e);
  if (m) e = m[1];
  return normalizeHost(e);
}

/** The effective trusted host list for a policy. */
export function trustedHostsFor(policy: TrustPolicy): string[] {
  const out = new Set<string>([DEFAULT_TRUSTED_HOST]);
  if (!policy.production) for (const h of DEV_TRUSTED_HOSTS) out.add(h);
  for (const e of policy.trustedHosts) {
    const h = entryHost(e);
    if (h) out.add(h);
  }
  return [...out];
}

/** `host` equals `trusted` or is a subdomain of it at a `.` boundary (`evilutilmeta.com` is not under `utilmeta.com`). */
export function hostMatches(host: string, trusted: string): boolean {
  const h = normalizeHost(host);
  const t = normalizeHost(trusted);
  if (!h || !t) return false;
  return h === t || h.endsWith('.' + t);
}

/** Throws UntrustedSupervisorError unless `url` may be used as a supervisor base URL under `policy`. */
export function checkSupervisorUrl(url: string, policy: TrustPolicy): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UntrustedSupervisorError(url, 'not an absolute URL');
  }
  const scheme = parsed.protocol.replace(/:$/, '').toLowerCase();
  if (policy.production) {
    if (scheme !== 'https' && scheme !== 'wss') {
      throw new UntrustedSupervisorError(url, `scheme "${scheme}" is not allowed in production (https or wss required)`);
    }
  } else if (!['http', 'https', 'ws', 'wss'].includes(scheme)) {
    throw new UntrustedSupervisorError(url, `scheme "${scheme}" is not an http(s)/ws(s) scheme`);
  }
  const host = normalizeHost(parsed.hostname);
  if (!host) throw new UntrustedSupervisorError(url, 'the URL has no host');
  const trusted = trustedHostsFor(policy);
  if (!trusted.some((t) => hostMatches(host, t))) {
    throw new UntrustedSupervisorError(
      url,
      `host "${host}" is neither one of nor a subdomain of the trusted hosts [${trusted.join(', ')}]` +
        ' (add it to UTILMETA_PROXY_TRUSTED_HOSTS to trust it)',
    );
  }
}

/** Boolean variant of checkSupervisorUrl. */
export function isTrustedSupervisorUrl(url: string, policy: TrustPolicy): boolean {
  try {
    checkSupervisorUrl(url, policy);
    return true;
  } catch (err) {
    if (err instanceof UntrustedSupervisorError) return false;
    throw err;
  }
}
