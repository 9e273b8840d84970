// Schema checks for rendered Kubernetes manifests, with the kubernetes-models packages.
//
// Their validate() checks types, required fields and formats but lets unknown fields through
// (the generated JSON schemas allow additional properties), so a misspelt optional field such
// as `periodSecond` would pass. The same packages ship exact TypeScript interfaces, so every
// object is also compiled as an object literal of its interface: TypeScript's excess-property
// check then rejects any field the API does not have, at any depth.
import ts from 'typescript';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The kubernetes-models module of an apiVersion/kind, or null when none is known. */
export function modelModule(obj: K8sObject): string | null {
  const { apiVersion, kind } = obj;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^[A-Z][A-Za-z]+$/.test(kind)) return null;
  if (apiVersion === 'monitoring.coreos.com/v1') return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  if (!/^([a-z0-9.-]+\/)?v\d+((alpha|beta)\d+)?$/.test(apiVersion)) return null;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

interface Model {
  new (data: unknown): { validate(): void };
}

/** Runs each object through its model's validate(); returns one message per failing object. */
export async function validateWithModels(objects: Array<{ label: string; obj: K8sObject }>): Promise<string[]> {
  const errors: string[] = [];
  for (const { label, obj } of objects) {
    const mod = modelModule(obj);
    if (!mod) {
      errors.push(`${label}: no schema for apiVersion '${obj.apiVersion}' kind '${obj.kind}'`);
      continue;
    }
    let Cls: Model | undefined;
    try {
      Cls = (await import(mod))[obj.kind] as Model | undefined;
    } catch {
      Cls = undefined;
    }
    if (!Cls) {
      errors.push(`${label}: no schema for apiVersion '${obj.apiVersion}' kind '${obj.kind}'`);
      continue;
    }
    try {
      new Cls(obj).validate();
    } catch (err) {
      errors.push(`${label}: ${(err as Error).message}`);
    }
  }
  return errors;
}

/** Compiles every object against its kubernetes-models interface; returns the diagnostics. */
export function typeCheckObjects(objects: Array<{ label: string; obj: K8sObject }>): string[] {
  const fileName = join(root, 'test', '__rendered_manifests__.ts'); // never written to disk
  const lines: string[] = [];
  const starts: Array<{ line: number; label: string }> = [];
  const errors: string[] = [];
  objects.forEach(({ label, obj }, i) => {
    const mod = modelModule(obj);
    if (!mod) {
      errors.push(`${label}: no schema for apiVersion '${obj.apiVersion}' kind '${obj.kind}'`);
      return;
    }
    starts.push({ line: lines.length, label });
    lines.push(`import type { I${obj.kind} as T${i} } from '${mod}';`);
    lines.push(`export const o${i}: T${i} = ${JSON.stringify(obj, null, 1)};`);
  });
  const text = lines.join('\n');
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, skipLibCheck: true, types: [],
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) => (name === fileName ? ts.createSourceFile(name, text, lang) : getSourceFile.call(host, name, lang, ...rest));
  host.fileExists = (name) => name === fileName || fileExists.call(host, name);
  host.readFile = (name) => (name === fileName ? text : readFile.call(host, name));
  const program = ts.createProgram([fileName], options, host);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0];
    if (d.file?.fileName !== fileName || d.start === undefined) {
      errors.push(`type check: ${message}`);
      continue;
    }
    const { line } = d.file.getLineAndCharacterOfPosition(d.start);
    const owner = [...starts].reverse().find((s) => s.line <= line);
    const at = d.file.text.split('\n')[line]?.trim().slice(0, 80);
    errors.push(`${owner?.label ?? 'manifest'}: ${message} (at ${at})`);
  }
  return errors;
}
