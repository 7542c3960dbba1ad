// `obr layer`: compress one linear layer from NumPy arrays. W is [out, in], H is [in, in]
// (undamped, any positive multiple of XXᵀ), the optional activations are per-channel energies
// [in] or raw inputs [tokens, in]. Prints one JSON object; writes the compressed weight as .npy
// in W's dtype, atomically.
import { parseArgs } from 'node:util';
import type { AdmmStats } from '../../core/admm';
import { compressLayer, InputError, type LayerConfig, type MaskScore } from '../../core/compress';
import { createOrtBackend, type OrtMatrixBackend } from '../../runtime/ortBackend';
import { isRecipe, parseGroupSize, parseSparsity, OptionError, RECIPES, recipePrunes, type Sparsity, validateGroupSize } from '../../protocol/recipes';
import { type CliCommand, UsageError } from '../command';
import { type NpyArray, readNpy, writeNpyAtomic } from '../npy';

const USAGE =
  'obr layer --weight W.npy --hessian H.npy [--act A.npy] --method M [--sparsity 0.5|2:4|4:8] [--alpha 0.5] [--wbits 4] [--damp 0.01] [--mask wanda|magnitude|sparsegpt] [--group-size 0|32|64|128|256] [--asym] [--threads N] [--solver batched|exact|pcg] [--ep cuda,cpu] --out Q.npy\n' +
  '  --solver: OBR compensation solver; batched (default: ADMM over all rows, products on onnxruntime with the\n' +
  '  --ep providers, default cpu), exact (one Cholesky per row, float64; also "direct"), pcg (per-row CG).';

function numberOption(name: string, text: string | undefined, fallback: number, check: (v: number) => boolean, hint: string): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || !check(v)) throw new OptionError(`--${name} ${text}: ${hint}`);
  return v;
}

function assertFinite(a: NpyArray, file: string): void {
  for (let i = 0; i < a.data.length; i++) {
    if (!Number.isFinite(a.data[i])) throw new InputError(`${file}: contains NaN or Inf at flat index ${i}`);
  }
}

export const layerCommand: CliCommand = {
  name: 'layer',
  summary: 'compress one linear layer from NumPy .npy arrays',
  usage: USAGE,
  async run(argv) {
    let values: Record<string, string | undefined>;
    let asymmetric = false;
    try {
      const parsed = parseArgs({
        args: argv,
        options: {
          weight: { type: 'string' },
          hessian: { type: 'string' },
          act: { type: 'string' },
          method: { type: 'string' },
          sparsity: { type: 'string' },
          alpha: { type: 'string' },
          wbits: { type: 'string' },
          damp: { type: 'string' },
          mask: { type: 'string' },
          'group-size': { type: 'string' },
          asym: { type: 'boolean' },
          threads: { type: 'string' },
          solver: { type: 'string' },
          ep: { type: 'string' },
          out: { type: 'string' },
        },
        strict: true,
        allowPositionals: false,
      });
      const { asym, ...strings } = parsed.values;
      values = strings;
      asymmetric = asym === true;
    } catch (e) {
      throw new UsageError(`${(e as Error).message} (run 'obr layer --help' for the options)`, { cause: e });
    }
    if (!values.weight || !values.hessian || !values.out || !values.method) {
      throw new UsageError("--weight, --hessian, --method and --out are required (run 'obr layer --help' for the options)");
    }
    const method = values.method;
    if (!isRecipe(method)) throw new OptionError(`--method ${method}: unknown method; use one of ${RECIPES.join(', ')}`);
    const sparsity: Sparsity = recipePrunes(method) ? parseSparsity(values.sparsity ?? '0.5') : { kind: 'dense' };
    const alpha = numberOption('alpha', values.alpha, 0.5, (v) => v >= 0 && v <= 1, 'use a number in [0, 1]');
    const wbits = numberOption('wbits', values.wbits, 4, (v) => Number.isInteger(v) && v >= 2 && v <= 8, 'use an integer in 2..8');
    const damp = numberOption('damp', values.damp, 0.01, (v) => v >= 0 && v < 10, 'use a number ≥ 0 such as 0.01');
    const threads = values.threads === undefined ? undefined : numberOption('threads', values.threads, 1, (v) => Number.isInteger(v) && v >= 1 && v <= 64, 'use an integer ≥ 1');
    const mask = values.mask ?? 'wanda';
    if (mask !== 'wanda' && mask !== 'magnitude' && mask !== 'sparsegpt') throw new OptionError(`--mask ${mask}: use wanda, magnitude or sparsegpt`);
    const groupSize = values['group-size'] === undefined ? 0 : parseGroupSize(values['group-size']);
    const solver = values.solver ?? 'batched';
    if (solver !== 'batched' && solver !== 'exact' && solver !== 'auto' && solver !== 'direct' && solver !== 'pcg') throw new OptionError(`--solver ${solver}: use batched, exact or pcg`);
    const providers = (values.ep ?? 'cpu').split(',').map((p) => p.trim()).filter(Boolean);

    const w = readNpy(values.weight);
    if (w.shape.length !== 2 || w.shape[0] === 0 || w.shape[1] === 0) throw new InputError(`${values.weight}: weight must be a 2-D [out, in] array, got shape (${w.shape.join(', ')})`);
    const [rows, cols] = w.shape;
    const h = readNpy(values.hessian);
    if (h.shape.length !== 2 || h.shape[0] !== h.shape[1]) throw new InputError(`${values.hessian}: Hessian must be a square 2-D array, got shape (${h.shape.join(', ')})`);
    validateGroupSize(groupSize, cols, values.weight);
    if (h.shape[0] !== cols) throw new InputError(`${values.hessian}: Hessian is ${h.shape[0]}×${h.shape[1]} but the weight has ${cols} input columns`);
    assertFinite(w, values.weight);
    assertFinite(h, values.hessian);
    let maxAbs = 0;
    for (let i = 0; i < h.data.length; i++) maxAbs = Math.max(maxAbs, Math.abs(h.data[i]));
    const tol = (h.dtype === 'float32' ? 1e-5 : 1e-10) * maxAbs;
    for (let i = 0; i < cols; i++) {
      if (h.data[i * cols + i] < 0) throw new InputError(`${values.hessian}: Hessian has a negative diagonal entry at ${i}; expected a multiple of XXᵀ`);
      for (let j = 0; j < i; j++) {
        if (Math.abs(h.data[i * cols + j] - h.data[j * cols + i]) > tol) throw new InputError(`${values.hessian}: Hessian is not symmetric (entries (${i}, ${j}) and (${j}, ${i}) differ)`);
      }
    }
    let channelEnergy: Float64Array | undefined;
    if (values.act) {
      const a = readNpy(values.act);
      assertFinite(a, values.act);
      if (a.shape.length === 1 && a.shape[0] === cols) {
        channelEnergy = a.data;
      } else if (a.shape.length === 2 && a.shape[1] === cols && a.shape[0] > 0) {
        // Raw inputs [tokens, in]: mean squared activation per input channel.
        const tokens = a.shape[0];
        channelEnergy = new Float64Array(cols);
        for (let t = 0; t < tokens; t++) for (let j = 0; j < cols; j++) channelEnergy[j] += a.data[t * cols + j] ** 2;
        for (let j = 0; j < cols; j++) channelEnergy[j] /= tokens;
      } else {
        throw new InputError(`${values.act}: activations must be per-channel energies [${cols}] or inputs [tokens, ${cols}], got shape (${a.shape.join(', ')})`);
      }
      for (let j = 0; j < cols; j++) if (channelEnergy[j] < 0) throw new InputError(`${values.act}: channel energies must be ≥ 0`);
    }

    const config: LayerConfig = { method, sparsity, wbits, alpha, damp, mask: mask as MaskScore, groupSize, asymmetric };
    const batched = solver === 'batched' && (method === 'obr-rtn' || method === 'obr-gptq');
    let backend: OrtMatrixBackend | undefined;
    let admm: AdmmStats | undefined;
    let result;
    try {
      if (batched) backend = await createOrtBackend({ executionProviders: providers, threads });
      result = await compressLayer({ weight: w.data, rows, cols, hessian: h.data, channelEnergy }, config, { threads, solver, backend, onAdmmStats: (s) => (admm = s) });
    } finally {
      await backend?.release();
    }
    writeNpyAtomic(values.out, result.weight, [rows, cols], w.dtype);
    const { loss } = result.stats;
    console.log(
      JSON.stringify(
        {
          method,
          rows,
          cols,
          sparsity: result.stats.sparsity,
          loss: loss.total,
          lossBreakdown: loss,
          relativeLoss: loss.outputEnergy > 0 ? loss.total / loss.outputEnergy : null,
          seconds: result.stats.seconds,
          solver: batched ? { name: 'batched', provider: backend!.provider.used, iterations: admm?.iterations } : { name: solver === 'batched' || solver === 'auto' ? 'exact' : solver },
          config: { sparsity: values.sparsity ?? (recipePrunes(method) ? '0.5' : '0'), alpha, wbits, damp, mask, groupSize, asymmetric },
          out: values.out,
        },
        null,
        2,
      ),
    );
    return 0;
  },
};
