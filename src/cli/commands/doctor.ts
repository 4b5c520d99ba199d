/** `spark doctor [--backend auto|tensorflow|torch|wasm|cpu] [--device D] [--threads N] [--json]` — formats `doctor()`. */
import { parseArgs } from 'node:util';
import { doctor, formatDoctor } from '../../backend/doctor.js';
import { parseBackendRequest } from '../../backend/init.js';
import { deviceRequest, parseDeviceRequest, type DeviceRequest } from '../../backend/torch-load.js';
import { UsageError } from '../../util/errors.js';

export const summary = 'check the compute backends (tensorflow, torch, wasm, cpu), versions, devices, threads and image decoding';

const HELP = `usage: spark doctor [--backend auto|tensorflow|torch|wasm|cpu] [--device D] [--threads N] [--json]

Reports each backend's availability with versions and threads, and for missing ones the reason and the fix; for
torch also the PyTorch version and the CUDA devices it sees.
Exits 3 when the requested backend (--backend, else $SPARK_BACKEND, else auto) is unusable.

  --backend X   the backend to check (default: $SPARK_BACKEND or auto)
  --device D    the torch device to check: auto | cpu | cuda | cuda:N (default: $SPARK_TORCH_DEVICE or auto)
  --threads N   intra-op threads to probe the native backend with (default: all cores)
  --json        print the report as JSON
`;

export default async function main(argv: string[]): Promise<number> {
  let values: { backend?: string; device?: string; threads?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        backend: { type: 'string' },
        device: { type: 'string' },
        threads: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new UsageError(`doctor: ${(e as Error).message}`);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  let request;
  try {
    request = values.backend != null ? parseBackendRequest(values.backend, '--backend')
      : process.env['SPARK_BACKEND'] ? parseBackendRequest(process.env['SPARK_BACKEND'], 'SPARK_BACKEND') : 'auto';
  } catch (e) {
    throw new UsageError(`doctor: ${(e as Error).message}`);
  }
  let device: DeviceRequest;
  try {
    device = values.device != null ? parseDeviceRequest(values.device, '--device') : deviceRequest(null);
  } catch (e) {
    throw new UsageError(`doctor: ${(e as Error).message}`);
  }
  let threads: number | undefined;
  if (values.threads != null) {
    threads = Number(values.threads);
    if (!Number.isInteger(threads) || threads < 1) throw new UsageError(`doctor: --threads must be a positive integer, got '${values.threads}'`);
  }
  const report = await doctor({ request, device, ...(threads ? { threads } : {}) });
  process.stdout.write(values.json ? JSON.stringify(report, null, 2) + '\n' : formatDoctor(report) + '\n');
  return report.selected.ok ? 0 : 3;
}
