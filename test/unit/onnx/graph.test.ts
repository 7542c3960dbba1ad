import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cloneModel, ensureOpset, indexGraph, NameAllocator, opsetVersion, pruneUnused, setMetadata } from '../../../src/onnx/graph';
import { GraphEditor } from '../../../src/onnx/edit';
import { decodeModel, encodeModel, DataType } from '../../../src/onnx/proto';
import { floatTensor, model, node, valueInfo } from '../../../src/onnx/builder';

const base = () =>
  model({
    name: 'g',
    node: [
      node('Relu', ['x'], ['a'], 'relu'),
      node('Neg', ['a'], ['dead'], 'neg'),
      node('Mul', ['dead', 'unused_w'], ['dead2'], 'mul'),
      node('Add', ['a', 'b'], ['y'], 'add'),
    ],
    initializer: [floatTensor('b', [1], [1]), floatTensor('unused_w', [1], [2])],
    input: [valueInfo('x', DataType.FLOAT, ['n']), valueInfo('unused_w', DataType.FLOAT, [1])],
    output: [valueInfo('y', DataType.FLOAT, ['n'])],
  });

test('indexGraph: producers, consumers, order', () => {
  const idx = indexGraph(base().graph!);
  assert.equal(idx.producer.get('a')?.name, 'relu');
  assert.deepEqual(idx.consumers.get('a')?.map((n) => n.name), ['neg', 'add']);
  assert.equal(idx.order.get(idx.producer.get('y')!), 3);
  assert.ok(idx.initializers.has('b') && idx.inputNames.has('x') && idx.outputNames.has('y'));
});

test('cloneModel copies arrays, shares elements, and re-encodes a decoded model to the same bytes', () => {
  const m = decodeModel(encodeModel(base()));
  const c = cloneModel(m);
  c.graph!.node!.pop();
  setMetadata(c, 'k', 'v');
  ensureOpset(c, 'com.microsoft', 1);
  assert.equal(m.graph!.node!.length, 4);
  assert.equal((m.metadataProps ?? []).length, 0);
  assert.equal(opsetVersion(c, 'com.microsoft'), 1);
  assert.equal(opsetVersion(m, 'com.microsoft'), undefined);
  assert.ok(Buffer.from(encodeModel(cloneModel(m))).equals(Buffer.from(encodeModel(m))));
});

test('pruneUnused drops dead nodes, their initializers and initializer-inputs, nothing else', () => {
  const c = cloneModel(base());
  const removed = pruneUnused(c);
  assert.deepEqual(removed, { nodes: 2, initializers: 1 });
  assert.deepEqual(c.graph!.node!.map((n) => n.name), ['relu', 'add']);
  assert.deepEqual(c.graph!.initializer!.map((t) => t.name), ['b']);
  assert.deepEqual(c.graph!.input!.map((v) => v.name), ['x']);
});

test('NameAllocator and GraphEditor never reuse a name; the source stays untouched', () => {
  const m = base();
  const names = new NameAllocator(m.graph!);
  assert.equal(names.fresh('a'), 'a_1');
  assert.equal(names.fresh('a'), 'a_2');
  assert.equal(names.fresh('fresh'), 'fresh');
  const ed = new GraphEditor(m, 't');
  const y2 = ed.one('Relu', ['y']);
  ed.output(y2);
  const out = ed.finish();
  assert.equal(out.graph!.node!.length, 5);
  assert.equal(m.graph!.node!.length, 4);
  assert.notEqual(y2, 'y');
});
