// The 28 compressible layers of the bundled small model (media/models/small) with calibration
// statistics captured the way the pipeline does (src/pipeline/capture.ts: ΣXᵀX inside the graph,
// on the bundled calibration text), all from the dense model in one pass. For solver tests that
// need real Hessians.
import { join } from 'node:path';
import { loadModel } from '../../../src/onnx/load';
import { BUNDLED_CALIBRATION_TEXT, bundledText } from '../../../src/pipeline/assets';
import { captureStats, type CaptureRequest } from '../../../src/pipeline/capture';
import { WorkingModel } from '../../../src/pipeline/working';
import { calibrationWindows, readText } from '../../../src/runtime/text';
import { loadTokenizer } from '../../../src/runtime/tokenizer';

export const SMALL_MODEL = join(__dirname, '..', '..', '..', 'media', 'models', 'small', 'model.onnx');

export interface ModelLayer {
  name: string;
  role: string;
  rows: number;
  cols: number;
  weight: Float64Array;
  hessian: Float64Array;
  channelEnergy: Float64Array;
}

/** Every compressible layer with its Hessian from `samples` windows of `seqlen` tokens (seed 0). */
export async function smallModelLayers(samples = 16, seqlen = 128): Promise<ModelLayer[]> {
  const loaded = await loadModel(SMALL_MODEL);
  try {
    const tokenizer = await loadTokenizer(SMALL_MODEL);
    const text = await readText(bundledText(BUNDLED_CALIBRATION_TEXT));
    const windows = calibrationWindows(tokenizer.encode(text.text), samples, seqlen, 0);
    const working = await WorkingModel.fromLoaded(loaded);
    const { layers } = working.compressible();
    const requests = new Map<string, CaptureRequest>();
    for (const l of layers) requests.set(l.inputName, { input: l.inputName, features: l.inFeatures });
    const { stats } = await captureStats((m) => working.bytes(m), working.proto, layers, [...requests.values()], windows, { executionProviders: ['cpu'], batch: 4 });
    const out: ModelLayer[] = [];
    for (const l of layers) {
      const st = stats.get(l.inputName)!;
      out.push({ name: l.name, role: l.role, rows: l.outFeatures, cols: l.inFeatures, weight: await working.readWeight(l), hessian: st.hessian, channelEnergy: st.channelEnergy });
    }
    return out;
  } finally {
    await loaded.close();
  }
}
