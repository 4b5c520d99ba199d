/**
 * `spark list models [--json] [--input-size N]`: the encoder presets with numbers computed from their definitions
 * (src/models/registry.ts): encoder parameters, parameters with a 1000-class head, SparK total (decoder width 768),
 * backbone FLOPs (conv + linear multiply-accumulates), stage channels, default drop path and β2.
 * `spark list` alone prints the same table.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../../util/errors.js';
import { describeEncoder, PRESET_NAMES, presetDescription, sparkParamCount, DOWNSAMPLE_RATIO } from '../../models/registry.js';

export const summary = 'list encoder presets (params, FLOPs, stage channels, defaults)';

const USAGE = `usage: spark list [models] [--json] [--input-size N]

  models           the encoder presets (the default and only listing)
  --json           machine-readable output
  --input-size N   input size for the FLOPs column (default 224, a multiple of 32)`;

export interface ModelRow {
  name: string;
  family: 'resnet' | 'convnext';
  description: string;
  encoderParams: number;
  paramsWithHead1000: number;
  sparkParams: number;
  inputSize: number;
  flops: number;
  stageChannels: number[];
  defaultDropPath: number;
  defaultBeta2: number;
  layers?: number[];
  width?: number;
  depths?: number[];
  dims?: number[];
}

export function modelRows(inputSize = 224): ModelRow[] {
  return PRESET_NAMES.map((name) => {
    const i = describeEncoder(name);
    const row: ModelRow = {
      name,
      family: i.family,
      description: presetDescription(name) ?? '',
      encoderParams: i.encoderParams,
      paramsWithHead1000: i.encoderParams + i.headParams(1000),
      sparkParams: sparkParamCount({ encoder: name, decoder: { type: 'light', width: 768 }, mask_ratio: 0.6, drop_path: null, densify_norm: 'auto' }, inputSize),
      inputSize,
      flops: i.flops(inputSize),
      stageChannels: [...i.stageChannels],
      defaultDropPath: i.defaultDropPath,
      defaultBeta2: i.defaultBeta2,
    };
    if (i.layers) row.layers = [...i.layers];
    if (i.width != null) row.width = i.width;
    if (i.depths) row.depths = [...i.depths];
    if (i.dims) row.dims = [...i.dims];
    return row;
  });
}

function fmtCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatModelTable(rows: ModelRow[]): string {
  const size = rows[0]?.inputSize ?? 224;
  const header = ['name', 'encoder params', '+1000-cls head', 'SparK total', `GMACs@${size}`, 'stage channels', 'drop path', 'β2'];
  const body = rows.map((r) => [
    r.name,
    fmtCount(r.encoderParams),
    fmtCount(r.paramsWithHead1000),
    fmtCount(r.sparkParams),
    (r.flops / 1e9).toFixed(3),
    r.stageChannels.join('/'),
    String(r.defaultDropPath),
    String(r.defaultBeta2),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((b) => b[c]!.length)));
  const right = new Set([1, 2, 3, 4, 6, 7]);
  const line = (cells: string[]) => cells.map((s, c) => (right.has(c) ? s.padStart(widths[c]!) : s.padEnd(widths[c]!))).join('  ').trimEnd();
  const out = [line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)];
  out.push(
    '',
    'GMACs: conv + linear multiply-accumulates of the backbone (no head). SparK total: encoder + densify norms/projections',
    '+ mask tokens + LightDecoder (width 768). resnet_mini / convnext_mini are small test variants, not from the paper.',
  );
  return out.join('\n');
}

export default async function list(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { json: { type: 'boolean', default: false }, 'input-size': { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
    });
  } catch (e) {
    const msg = (e as Error).message;
    const opt = /option '([^' ]+)/i.exec(msg)?.[1];
    const what = !opt ? msg.split('. ')[0] : /argument missing/i.test(msg)
        ? `option '${opt}' needs a value`
        : /does not take an argument/i.test(msg)
          ? `option '${opt}' takes no value`
          : `unknown option '${opt}'`;
    throw new UsageError(`list: ${what} (see \`spark list --help\`)`);
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const what = parsed.positionals[0] ?? 'models';
  if (what !== 'models' || parsed.positionals.length > 1) {
    throw new UsageError(`unknown listing '${parsed.positionals.join(' ')}' (available: models)`);
  }
  let size = 224;
  if (parsed.values['input-size'] != null) {
    size = Number(parsed.values['input-size']);
    if (!Number.isInteger(size) || size <= 0 || size % DOWNSAMPLE_RATIO !== 0) {
      throw new UsageError(`--input-size must be a positive multiple of ${DOWNSAMPLE_RATIO}, got '${parsed.values['input-size']}'`);
    }
  }
  const rows = modelRows(size);
  process.stdout.write(parsed.values.json ? JSON.stringify(rows, null, 2) + '\n' : formatModelTable(rows) + '\n');
  return 0;
}
