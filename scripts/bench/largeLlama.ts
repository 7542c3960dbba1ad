// Writes a LLaMA-shaped ONNX model whose float32 weights live in external data (`model.onnx.data`
// beside `model.onnx`), for the benchmarks that need big models (onnxLarge.ts, scale.ts). The
// weight values are small finite numbers from a multiplicative hash, one 16 MiB chunk written over
// and over: they don't matter for time and memory, and the file is written without ever holding
// a whole tensor in memory.
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildLlamaGraph } from '../../test/unit/onnx/llamaGraph';
import { DataType, encodeModel, type TensorProto } from '../../src/onnx/proto';

export interface LargeLlamaShape {
  layers: number;
  hidden: number;
  heads: number;
  intermediate: number;
  vocab: number;
}

/** Writes `dir/model.onnx` + `dir/model.onnx.data`; returns the weight bytes and the graph bytes. */
export async function writeLargeLlama(dir: string, shape: LargeLlamaShape): Promise<{ weightBytes: number; onnxBytes: number }> {
  const data = await open(join(dir, 'model.onnx.data'), 'w');
  let offset = 0;
  const pending: Array<{ offset: number; bytes: number }> = [];
  const model = buildLlamaGraph({
    ...shape,
    weightTensor: (name: string, dims: number[]): TensorProto => {
      const bytes = dims[0]! * dims[1]! * 4;
      pending.push({ offset, bytes });
      const t: TensorProto = {
        name,
        dims,
        dataType: DataType.FLOAT,
        dataLocation: 1,
        externalData: [
          { key: 'location', value: 'model.onnx.data' },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(bytes) },
        ],
      };
      offset += bytes;
      return t;
    },
  });
  const chunk = new Float32Array(4 * 1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (((i * 2654435761) >>> 0) / 2 ** 32 - 0.5) * 0.04;
  const chunkBytes = new Uint8Array(chunk.buffer);
  try {
    for (const p of pending) {
      for (let done = 0; done < p.bytes; ) {
        const n = Math.min(chunkBytes.length, p.bytes - done);
        await data.write(chunkBytes, 0, n, p.offset + done);
        done += n;
      }
    }
  } finally {
    await data.close();
  }
  const proto = encodeModel(model);
  await writeFile(join(dir, 'model.onnx'), proto);
  return { weightBytes: offset, onnxBytes: proto.length };
}
