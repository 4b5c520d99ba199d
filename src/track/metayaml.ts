/**
 * meta.yaml reading and writing, matching MLflow's (PyYAML) output: sorted keys, block style, strings plain when
 * that is unambiguous under both YAML 1.1 (PyYAML) and 1.2 and single-quoted otherwise (ids are all digits and
 * must stay strings).
 */
import YAML from 'yaml';

export type MetaValue = string | number | null | never[];

function plainIsSafe(s: string): boolean {
  if (!/^[A-Za-z0-9_./][A-Za-z0-9_./=+\-:%~]*$/.test(s)) return false;
  if (s.endsWith(':')) return false;
  try {
    return YAML.parse(`v: ${s}`, { schema: 'yaml-1.1' })?.v === s && YAML.parse(`v: ${s}`)?.v === s;
  } catch {
    return false;
  }
}

export function yamlScalar(v: MetaValue): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return '[]';
  if (typeof v === 'number') return String(v);
  if (plainIsSafe(v)) return v;
  // control characters (newlines...): double quotes with JSON escapes, which YAML double-quoted scalars share
  if (/[\u0000-\u001f\u007f]/.test(v)) return JSON.stringify(v);
  return `'${v.replace(/'/g, "''")}'`;
}

export function dumpMeta(obj: Record<string, MetaValue>): string {
  return (
    Object.keys(obj)
      .sort()
      .map((k) => `${k}: ${yamlScalar(obj[k]!)}`)
      .join('\n') + '\n'
  );
}

export function parseMeta(text: string): Record<string, unknown> {
  const v = YAML.parse(text, { schema: 'yaml-1.1' }) as unknown;
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}
