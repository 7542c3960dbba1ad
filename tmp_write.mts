import { writeFileSync, mkdirSync, copyFileSync } from 'node:fs';
import { miniLlama } from './test/unit/onnx/miniLlama';
import { encodeModel } from './src/onnx/proto';
for (const [name, c] of [['gqa5', { heads: 5, kvHeads: 1, headDim: 32, intermediate: 416 }], ['qwen14', { heads: 14, kvHeads: 2, headDim: 64, intermediate: 4864 }]] as const) {
  const dir = `/tmp/i14/${name}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/model.onnx`, encodeModel(miniLlama({ vocab: 4096, layers: 2, seq: 32, ...c })));
  copyFileSync('media/models/small/tokenizer.json', `${dir}/tokenizer.json`);
}
