import { parseCommandArgs } from '../args.js';
import path from 'node:path';
import { exportEncoder, type ExportFormat } from '../../formats/export.js';
import { UsageError } from '../../util/errors.js';
import { resolveRunPath } from '../../train/checkpoint.js';

export const summary = "export a run's encoder as .safetensors (timm/official keys, PyTorch layouts) or a TF.js folder";

const HELP = `usage: spark export <run-dir|import-dir|checkpoint> [--format safetensors|tfjs] [--out PATH] [--keys official|timm]

  --format  safetensors (default): PyTorch layouts, timm ResNet / official ConvNeXt keys, loadable with
            timm.create_model(name).load_state_dict(state, strict=False) (only the head is missing);
            tfjs: a folder with model.json (weightsManifest) and weights.bin in TF layouts
  --out     output file or folder (default: <run-dir>/export/encoder.safetensors or <run-dir>/export/tfjs)
  --keys    ConvNeXt key style for safetensors: official (SparK's, default) or timm
`;

export default async function exportCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs('export', {
    args: argv,
    allowPositionals: true,
    options: {
      format: { type: 'string', default: 'safetensors' },
      out: { type: 'string', short: 'o' },
      keys: { type: 'string', default: 'official' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('spark export: expected one run folder or checkpoint (see --help)');
  const format = values.format as ExportFormat;
  if (format !== 'safetensors' && format !== 'tfjs') throw new UsageError(`--format must be safetensors or tfjs, got '${values.format}'`);
  if (values.keys !== 'official' && values.keys !== 'timm') throw new UsageError(`--keys must be official or timm, got '${values.keys}'`);
  const src = resolveRunPath(positionals[0]!); // a folder of runs → its newest run
  const out = values.out ?? path.join(src, 'export', format === 'tfjs' ? 'tfjs' : 'encoder.safetensors');
  const res = await exportEncoder(src, { format, out, keys: values.keys });
  process.stdout.write(`exported ${res.encoderName}: ${res.tensors} tensors, ${res.parameters.toLocaleString('en-US')} parameters → ${res.out}\n`);
  if (format === 'safetensors' && values.keys === 'official' && res.encoderName.startsWith('convnext')) {
    process.stdout.write('  keys: official ConvNeXt (as SparK releases them); add --keys timm for timm.create_model(...) ConvNeXts\n');
  }
  return 0;
}
