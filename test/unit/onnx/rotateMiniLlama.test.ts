// The hand-built mini LLaMA decoder (./miniLlama.ts) has the layout findLinearLayers and the
// transforms expect. Runs in milliseconds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findLinearLayers } from '../../../src/onnx/linear';
import { miniLlama } from './miniLlama';

test('the mini LLaMA builder has LLaMA roles and blocks (GQA)', () => {
  const layers = findLinearLayers(miniLlama({ vocab: 32, heads: 4, kvHeads: 2, headDim: 4, intermediate: 24, layers: 2, seq: 12 }));
  assert.deepEqual(
    layers.map((l) => `${l.block}:${l.role}`),
    ['0:q', '0:k', '0:v', '0:o', '0:gate', '0:up', '0:down', '1:q', '1:k', '1:v', '1:o', '1:gate', '1:up', '1:down', 'null:lm_head'],
  );
});
