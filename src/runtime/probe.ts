// A provider probe: loads a 3×2 MatMul graph on the preferred providers and runs it. Used by
// the worker to tell the user which execution provider this machine will use.
import * as ort from 'onnxruntime-node';
import { floatTensor, model, node, valueInfo } from '../onnx/builder';
import { DataType, encodeModel } from '../onnx/proto';
import type { ProviderProbe } from '../protocol/worker';
import { createSessionWithFallback } from './providers';

export async function probeProviders(preference: readonly string[]): Promise<ProviderProbe> {
  const bytes = encodeModel(
    model({
      name: 'probe',
      node: [node('MatMul', ['x', 'w'], ['y'], 'probe/MatMul')],
      initializer: [floatTensor('w', [3, 2], [1, 0, 0, 1, 1, 1])],
      input: [valueInfo('x', DataType.FLOAT, [1, 3])],
      output: [valueInfo('y', DataType.FLOAT, [1, 2])],
    }),
  );
  const { session, used, tried } = await createSessionWithFallback(bytes, preference);
  try {
    const result = await session.run({ x: new ort.Tensor('float32', Float32Array.from([1, 2, 3]), [1, 3]) });
    return { used, tried, output: Array.from(result.y!.data as Float32Array) };
  } finally {
    await session.release();
  }
}
