import { parseCommandArgs } from '../args.js';
import { importCheckpoint } from '../../formats/import.js';
import { UsageError } from '../../util/errors.js';
import type { EncoderSpec } from '../../spec/types.js';

export const summary = 'import an official SparK / timm / ConvNeXt PyTorch checkpoint (.pth) or .safetensors';

const HELP = `usage: spark import <file.pth|file.safetensors> --out <dir> [--encoder NAME|JSON] [--allow-partial] [--json]

Reads torch.save zip checkpoints without Python (a safe pickle subset; nothing is executed). Recognises the
encoder-only timm/official state dict, the old {arch, module, is_pretrain} wrapper, and the with-decoder SparK file
(module + config). Writes <dir>/config.yaml, encoder.safetensors (and checkpoint/model.safetensors for with-decoder
files), usable by spark reconstruct / finetune / probe / export.
  --encoder        model to load into (preset name or JSON family object); default: inferred from the keys
  --allow-partial  import even when keys are missing, unexpected or of another shape (they are listed)
`;

export default async function importCmd(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs('import', {
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string', short: 'o' },
      encoder: { type: 'string' },
      'allow-partial': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('spark import: expected one checkpoint file (see --help)');
  if (!values.out) throw new UsageError('spark import: --out <dir> is required');
  let encoder: EncoderSpec | undefined;
  if (values.encoder) {
    try {
      encoder = values.encoder.trim().startsWith('{') ? (JSON.parse(values.encoder) as EncoderSpec) : values.encoder;
    } catch (e) {
      throw new UsageError(`--encoder: not valid JSON: ${(e as Error).message}`);
    }
  }
  const rep = await importCheckpoint(positionals[0]!, { out: values.out, allowPartial: values['allow-partial'], encoder });
  if (values.json) {
    process.stdout.write(JSON.stringify(rep, null, 2) + '\n');
    return 0;
  }
  const lines = [
    `imported ${rep.file}`,
    `  layout      ${rep.layout}`,
    `  encoder     ${rep.encoderName}${rep.model ? ` + decoder (width ${rep.model.decoder.width}), input ${rep.inputSize}, mask ratio ${rep.model.mask_ratio}` : ''}`,
    `  tensors     ${rep.loaded} loaded${rep.ignored.length ? `, ${rep.ignored.length} ignored (${rep.ignored.join(', ')})` : ''}`,
  ];
  if (rep.missing.length) lines.push(`  missing     ${rep.missing.length}: ${rep.missing.join(', ')}`);
  if (rep.unexpected.length) lines.push(`  unexpected  ${rep.unexpected.length}: ${rep.unexpected.join(', ')}`);
  if (rep.shapeMismatches.length) lines.push(`  wrong shape ${rep.shapeMismatches.length}: ${rep.shapeMismatches.join('; ')}`);
  lines.push(`  wrote       ${rep.files.map((f) => `${rep.outDir}/${f}`).join(', ')}`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
