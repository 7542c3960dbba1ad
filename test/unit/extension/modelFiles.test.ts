// Models view grouping: outputs and reports hang under the source model they were made from.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { groupModels } from '../../../src/extension/modelFiles';

test('groupModels puts compressed outputs and reports under their source model', () => {
  assert.deepEqual(
    groupModels([
      '/w/m/model.onnx',
      '/w/m/model.wanda-rtn-w4a4kv4-s50.onnx',
      '/w/m/model.obr-gptq-w4-s50.packed.onnx',
      '/w/m/model.wanda-rtn-w4a4kv4-s50.report.json',
      '/w/other/model.onnx',
      '/w/m/orphan.rtn-w4a16kv16-s0.report.json',
    ]),
    [
      { model: '/w/m/model.onnx', outputs: ['/w/m/model.obr-gptq-w4-s50.packed.onnx', '/w/m/model.wanda-rtn-w4a4kv4-s50.onnx'], reports: ['/w/m/model.wanda-rtn-w4a4kv4-s50.report.json'] },
      { model: '/w/m/orphan.rtn-w4a16kv16-s0.report.json', outputs: [], reports: [] },
      { model: '/w/other/model.onnx', outputs: [], reports: [] },
    ],
  );
});
