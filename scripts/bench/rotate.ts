// Times the QuaRot rotation (rotateModel: norm folding, residual / value / head / down rotations of
// every weight incl. the 32000-row embedding and lm_head) on a TinyLlama-width LLaMA (hidden 2048,
// 32 heads, FF 5632, vocab 32000, float32; scripts/bench/largeLlama.ts) with a stated number of
// blocks; with --check also the pipeline's rotation check (dense vs rotated logits on 2 windows of
// 64 tokens and one run of the simulated A4/KV4 graph), which the pipeline's rotate stage includes.
//   node --import tsx scripts/bench/rotate.ts [--blocks 1] [--check] [--dir /tmp/obr-rotate-bench] [--out bench-results/rotate.json]
import { existsSync, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../../src/onnx/load';
import { encodeModel } from '../../src/onnx/proto';
import { rotateModel } from '../../src/onnx/rotate';
import { checkRotation } from '../../src/pipeline/rotationCheck';
import { WorkingModel } from '../../src/pipeline/working';
import { writeLargeLlama } from './largeLlama';

const { values } = parseArgs({
  options: {
    blocks: { type: 'string', default: '1' },
    check: { type: 'boolean', default: false },
    dir: { type: 'string', default: '/tmp/obr-rotate-bench' },
    out: { type: 'string' },
  },
});

async function main(): Promise<void> {
  const blocks = Number(values.blocks);
  const shape = { layers: blocks, hidden: 2048, heads: 32, intermediate: 5632, vocab: 32000 };
  const dir = join(values.dir!, `b${blocks}`);
  if (!existsSync(join(dir, 'model.onnx'))) {
    mkdirSync(dir, { recursive: true });
    await writeLargeLlama(dir, shape);
  }
  const loaded = await loadModel(join(dir, 'model.onnx'));
  const working = await WorkingModel.fromLoaded(loaded);
  await loaded.close();
  const loadBefore = loadavg()[0];
  const t = performance.now();
  const cpu = process.cpuUsage();
  const r = rotateModel(working.proto, { seed: 0 });
  const rotateSeconds = (performance.now() - t) / 1000;
  const used = process.cpuUsage(cpu);
  // CPU seconds of this process (user + system): the honest figure on a shared, loaded machine.
  const rotateCpuSeconds = (used.user + used.system) / 1e6;
  let checkSeconds: number | undefined;
  if (values.check) {
    const seqlen = 64;
    const ids = Int32Array.from({ length: 2 * seqlen }, (_, i) => (i * 7919) % shape.vocab);
    const t1 = performance.now();
    await checkRotation(working.proto, r.model, { ids, count: 2, seqlen, offsets: [0, seqlen] }, encodeModel, { executionProviders: ['cpu'], abits: 4, kvbits: 4 });
    checkSeconds = (performance.now() - t1) / 1000;
  }
  const result = {
    benchmark: 'rotate',
    command: `node --import tsx scripts/bench/rotate.ts --blocks ${blocks}${values.check ? ' --check' : ''}`,
    date: new Date().toISOString(),
    shape,
    rotation: r.rotation,
    rotateSeconds: Number(rotateSeconds.toFixed(3)),
    rotateCpuSeconds: Number(rotateCpuSeconds.toFixed(3)),
    ...(checkSeconds !== undefined ? { checkSeconds: Number(checkSeconds.toFixed(3)) } : {}),
    loadAverage: [loadBefore, loadavg()[0]].map((x) => Number(x.toFixed(2))),
  };
  console.log(JSON.stringify(result, null, 2));
  if (values.out) await writeFile(values.out, JSON.stringify(result, null, 2) + '\n');
}

void main();
