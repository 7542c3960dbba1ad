import { miniLlama, runLogits, relError } from './test/unit/onnx/miniLlama';
import { rotateModel } from './src/onnx/rotate';
import { addFakeQuant } from './src/onnx/fakeQuant';
for (const c of [{ heads: 5, kvHeads: 1, headDim: 32, intermediate: 416 }, { heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864 }]) {
  const m = miniLlama({ vocab: 64, layers: 2, seq: 16, ...c });
  const ids = Array.from({ length: 16 }, (_, i) => (i * 7) % 64);
  const ref = await runLogits(m, ids);
  try {
    const r = rotateModel(m, { seed: 0 });
    console.log(c, r.warnings, JSON.stringify(r.rotation));
    const rot = await runLogits(r.model, ids);
    console.log('rot relErr', relError(ref, rot));
    const fq = addFakeQuant(r.model, { abits: 16, kvbits: 16 });
    const fq2 = addFakeQuant(r.model, { abits: 4, kvbits: 4 });
    console.log('fq warn', fq2.warnings);
    const q = await runLogits(fq2.model, ids);
    console.log('fq relErr', relError(ref, q));
  } catch (e) { console.log('ERR', (e as Error).message.slice(0, 300)); }
}
