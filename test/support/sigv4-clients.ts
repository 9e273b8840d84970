// Real SigV4 clients driving real HTTP requests over loopback: botocore (Debian's
// python3-botocore, through /usr/bin/python3), @smithy/signature-v4, @aws-sdk/signature-v4 (the
// seed's JavaScript example) and aws4. Each signs with its own code and sends with its own
// transport where it has one (botocore URLLib3Session, smithy NodeHttpHandler); aws4 only signs, so
// its request goes out through node:http, the way aws4's README does it.
//
// Reusable against any listener: give a base URL such as http://127.0.0.1:8888.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 as AwsSdkSignatureV4 } from '@aws-sdk/signature-v4';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 as SmithySignatureV4 } from '@smithy/signature-v4';
import aws4 from 'aws4';

export type SigV4ClientName = 'botocore' | 'smithy' | 'aws-sdk' | 'aws4';
export const SIGV4_CLIENTS: readonly SigV4ClientName[] = ['botocore', 'smithy', 'aws-sdk', 'aws4'];

/** The interpreter that has Debian's python3-botocore (a pyenv `python3` on PATH may not). */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export interface SignedCall {
  /** e.g. http://127.0.0.1:8888 (loopback only). */
  baseUrl: string;
  method: string;
  /** The path exactly as it goes on the wire: already percent-encoded where needed. */
  path: string;
  /** Decoded query pairs in order; a key may repeat. Each client encodes them its own way. */
  query?: Array<[string, string]>;
  headers?: Record<string, string>;
  body?: string;
  accessKeyId: string;
  secretAccessKey: string;
  service: string;
  region: string;
  /** Presigned URL (query-string auth) valid for this many seconds, instead of the header form. */
  presignExpires?: number;
  /** Send `x-amz-content-sha256` with the SHA-256 of the body (smithy always does). */
  declarePayloadHash?: boolean;
  /**
   * Sent instead of what was signed: another body, or another value for the first occurrence of
   * a query key (key and value of unreserved characters only).
   */
  tamper?: { body?: string; query?: [key: string, value: string] };
}

export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export function jsonOf(r: ClientResponse): any {
  try {
    return JSON.parse(r.body);
  } catch {
    return undefined;
  }
}

const sha256Hex = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

function hostOf(baseUrl: string): { hostname: string; port: number; host: string } {
  const u = new URL(baseUrl);
  const port = Number(u.port || 80);
  return { hostname: u.hostname, port, host: u.host };
}

function queryObject(pairs: Array<[string, string]> = []): Record<string, string | string[]> {
  const q: Record<string, string | string[]> = {};
  for (const [k, v] of pairs) {
    const prev = q[k];
    q[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return q;
}

function encodeQuery(pairs: Array<[string, string]> = []): string {
  return pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
}

/** Sends one request with node:http, target and headers verbatim. */
export function rawRequest(baseUrl: string, method: string, target: string, headers: Record<string, string | number>, body?: string): Promise<ClientResponse> {
  const { hostname, port } = hostOf(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const h: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) h[k] = Array.isArray(v) ? v.join(', ') : String(v);
        resolve({ status: res.statusCode ?? 0, headers: h, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// ---------------------------------------------------------------------------------------------
// smithy and @aws-sdk/signature-v4 (same calling convention, different code: the latter pins
// @smithy/signature-v4 1.x)

async function sendSmithyLike(which: 'smithy' | 'aws-sdk', call: SignedCall): Promise<ClientResponse> {
  const { hostname, port, host } = hostOf(call.baseUrl);
  const init = {
    service: call.service,
    region: call.region,
    sha256: Sha256,
    credentials: { accessKeyId: call.accessKeyId, secretAccessKey: call.secretAccessKey },
  };
  const headers: Record<string, string> = { host, ...call.headers };
  const request = new HttpRequest({
    method: call.method,
    protocol: 'http:',
    hostname,
    port,
    path: call.path,
    headers,
    query: queryObject(call.query),
    body: call.body,
  });
  const applyChecksum = call.declarePayloadHash ?? true;
  let signed: HttpRequest;
  if (which === 'smithy') {
    const signer = new SmithySignatureV4({ ...init, applyChecksum });
    signed = (call.presignExpires ? await signer.presign(request, { expiresIn: call.presignExpires }) : await signer.sign(request)) as HttpRequest;
  } else {
    const signer = new AwsSdkSignatureV4({ ...init, applyChecksum });
    signed = (call.presignExpires ? await signer.presign(request as never, { expiresIn: call.presignExpires }) : await signer.sign(request as never)) as unknown as HttpRequest;
  }
  if (call.tamper?.body !== undefined) signed.body = call.tamper.body;
  if (call.tamper?.query) {
    // NodeHttpHandler builds the target from `path` and `query`.
    const [k, v] = call.tamper.query;
    const prev = signed.query[k];
    signed.query[k] = Array.isArray(prev) ? [v, ...prev.slice(1)] : v;
  }
  const handler = new NodeHttpHandler();
  try {
    const { response } = await handler.handle(signed as never);
    const chunks: Buffer[] = [];
    for await (const c of response.body as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
    return { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') };
  } finally {
    handler.destroy();
  }
}

/** Replaces the value of the first `key=` in a request target. */
export function replaceQueryValue(target: string, key: string, value: string): string {
  const esc = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return target.replace(new RegExp(`([?&])${esc}=[^&]*`), (_m, sep: string) => `${sep}${key}=${value}`);
}

// ---------------------------------------------------------------------------------------------
// aws4

async function sendAws4(call: SignedCall): Promise<ClientResponse> {
  const { hostname, port, host } = hostOf(call.baseUrl);
  const query = [...(call.query ?? [])];
  if (call.presignExpires) query.push(['X-Amz-Expires', String(call.presignExpires)]);
  const qs = encodeQuery(query);
  const headers: Record<string, string> = { Host: host, ...call.headers };
  if (call.declarePayloadHash && call.body !== undefined) headers['X-Amz-Content-Sha256'] = sha256Hex(call.body);
  const opts: aws4.Request & { headers: Record<string, string | number> } = {
    host: hostname,
    port,
    method: call.method,
    path: qs ? `${call.path}?${qs}` : call.path,
    headers,
    body: call.body,
    service: call.service,
    region: call.region,
    signQuery: call.presignExpires ? true : undefined,
  } as never;
  const signed = aws4.sign(opts, { accessKeyId: call.accessKeyId, secretAccessKey: call.secretAccessKey }) as typeof opts;
  let target = signed.path as string;
  if (call.tamper?.query) target = replaceQueryValue(target, ...call.tamper.query);
  return rawRequest(call.baseUrl, call.method, target, signed.headers, call.tamper?.body ?? call.body);
}

// ---------------------------------------------------------------------------------------------
// botocore

const BOTOCORE_SCRIPT = String.raw`
import json, sys, hashlib, re
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

session = URLLib3Session()
out = []
for call in json.load(sys.stdin):
    try:
        cred = Credentials(call["accessKeyId"], call["secretAccessKey"])
        headers = dict(call.get("headers") or {})
        body = call.get("body")
        if call.get("declarePayloadHash") and body is not None:
            headers["X-Amz-Content-SHA256"] = hashlib.sha256(body.encode("utf-8")).hexdigest()
        pairs = [tuple(p) for p in (call.get("query") or [])]
        if call.get("presignExpires"):
            # SigV4QueryAuth merges params into a dict; list values keep repeated keys.
            params = {}
            for k, v in pairs:
                params.setdefault(k, []).append(v)
            signer = SigV4QueryAuth(cred, call["service"], call["region"], expires=call["presignExpires"])
        else:
            params = pairs
            signer = SigV4Auth(cred, call["service"], call["region"])
        req = AWSRequest(method=call["method"], url=call["baseUrl"] + call["path"], headers=headers,
                         data=body if body is not None else None, params=params or None)
        signer.add_auth(req)
        prepared = req.prepare()
        tamper = call.get("tamper") or {}
        if tamper.get("body") is not None:
            prepared.body = tamper["body"].encode("utf-8")
        if tamper.get("query"):
            k, v = tamper["query"]
            prepared.url = re.sub(r"([?&])" + re.escape(k) + r"=[^&]*", lambda m: m.group(1) + k + "=" + v, prepared.url, count=1)
        resp = session.send(prepared)
        out.append({"status": resp.status_code, "headers": {k.lower(): v for k, v in resp.headers.items()},
                    "body": resp.content.decode("utf-8", "replace"), "url": prepared.url})
    except Exception as e:
        out.append({"error": "%s: %s" % (type(e).__name__, e)})
json.dump(out, sys.stdout)
`;

/** Signs and sends every call with botocore in one Python process (importing botocore is slow). */
export function sendBotocoreBatch(calls: SignedCall[]): Promise<ClientResponse[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(SYSTEM_PYTHON, ['-c', BOTOCORE_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`botocore script exited ${code}: ${stderr}`));
      const results = JSON.parse(stdout) as Array<ClientResponse & { error?: string }>;
      const bad = results.find((r) => r.error);
      if (bad) return reject(new Error(`botocore: ${bad.error}`));
      resolve(results);
    });
    child.stdin.end(JSON.stringify(calls));
  });
}

/** Whether /usr/bin/python3 can import botocore (python3-botocore installed). */
export function botocoreVersion(): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn(SYSTEM_PYTHON, ['-c', 'import botocore; print(botocore.__version__)'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (c) => (out += c));
    child.on('error', () => resolve(null));
    child.on('close', (code) => resolve(code === 0 ? out.trim() : null));
  });
}

/** Signs `call` with `client` and sends it; the response as received. */
export async function sendSigned(client: SigV4ClientName, call: SignedCall): Promise<ClientResponse> {
  switch (client) {
    case 'botocore':
      return (await sendBotocoreBatch([call]))[0];
    case 'smithy':
    case 'aws-sdk':
      return sendSmithyLike(client, call);
    case 'aws4':
      return sendAws4(call);
  }
}
