// The working store (src/onnx/store.ts): weights written to the working data file read back bit
// for bit, the source's external data read by offset, whole graphs externalized and inlined again,
// and the resident-bytes accounting of what readers hold.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadModel } from '../../../src/onnx/load';
import { encodeModel } from '../../../src/onnx/proto';
import { INLINE_BELOW_BYTES, WeightStore } from '../../../src/onnx/store';
import { externalDataEntry, isExternal } from '../../../src/onnx/tensor';

const TINY_DIR = path.resolve(__dirname, '..', '..', 'fixtures', 'models', 'tiny');

test('a weight put in the store reads back bit for bit from the working data file; small ones stay inline', async () => {
  const src = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-store-'));
  const store = new WeightStore(src.dir, path.join(dir, 'working.data'));
  try {
    const inits = src.model.graph!.initializer!;
    const put = [];
    for (const t of inits) {
      const bytes = await src.readBytes(t.name!);
      const stored = await store.put(t, bytes);
      assert.equal(isExternal(stored), bytes.length >= INLINE_BELOW_BYTES, t.name!);
      if (isExternal(stored)) {
        const e = externalDataEntry(stored);
        assert.equal(e.location, path.join(dir, 'working.data'));
        assert.equal(e.offset % 4096, 0, 'page-aligned');
        assert.equal(e.length, bytes.length);
      }
      put.push({ stored, bytes });
    }
    assert.ok(put.some((p) => isExternal(p.stored)) && put.some((p) => !isExternal(p.stored)));
    // Read back in reverse order (positioned reads, not a stream).
    let held = 0;
    for (const { stored, bytes } of [...put].reverse()) {
      const back = await store.readTensor(stored);
      assert.ok(Buffer.from(back).equals(Buffer.from(bytes)), stored.name!);
      if (isExternal(stored)) held += back.length;
      assert.equal(store.resident, held, 'every byte read from a data file is resident until released');
    }
    assert.equal(store.peakResident, held);
    store.release(held);
    assert.equal(store.resident, 0);
    assert.equal(store.written, put.filter((p) => isExternal(p.stored)).reduce((s, p) => s + p.bytes.length, 0));
    // Streamed in small chunks: the same bytes, only one chunk resident at a time.
    const big = put.find((p) => p.bytes.length > 10_000)!;
    const chunks: Buffer[] = [];
    for await (const c of store.streamTensor(big.stored, 4096)) {
      assert.ok(store.resident <= 4096);
      chunks.push(Buffer.from(c));
    }
    assert.ok(Buffer.concat(chunks).equals(Buffer.from(big.bytes)));
    assert.equal(store.resident, 0);
  } finally {
    await store.close();
    await src.close();
  }
  assert.ok(!existsSync(path.join(dir, 'working.data')), 'close() removes the working data file');
});

test('externalize moves a graph\'s weights to the data file, inlined() brings them back: the same model bytes', async () => {
  const src = await loadModel(path.join(TINY_DIR, 'model.onnx'));
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-store-'));
  const store = new WeightStore(src.dir, path.join(dir, 'working.data'));
  try {
    const ext = await store.externalize(src.model);
    const graphBytes = encodeModel(ext).length;
    assert.ok(graphBytes < src.fileBytes / 10, `the externalized graph is small (${graphBytes} of ${src.fileBytes} bytes)`);
    assert.ok(statSync(path.join(dir, 'working.data')).size >= src.weightBytes * 0.9);
    assert.equal(store.resident, 0, 'externalizing holds nothing');
    const back = await store.inlined(ext);
    assert.equal(store.resident, back.bytes);
    assert.ok(Buffer.from(encodeModel(back.model)).equals(Buffer.from(encodeModel(src.model))), 'round trip: the same serialized model');
    store.release(back.bytes);
  } finally {
    await store.close();
    await src.close();
  }
});

test('the store reads the source model\'s external data by offset (relative locations resolve against its folder)', async () => {
  const src = await loadModel(path.join(TINY_DIR, 'model.external.onnx'));
  const dir = mkdtempSync(path.join(tmpdir(), 'obr-store-'));
  const store = new WeightStore(src.dir, path.join(dir, 'working.data'));
  try {
    let n = 0;
    for (const t of src.model.graph!.initializer!) {
      if (!isExternal(t)) continue;
      const a = await store.readTensor(t);
      assert.ok(Buffer.from(a).equals(Buffer.from(await src.readBytes(t.name!))), t.name!);
      store.release(a.length);
      n++;
    }
    assert.ok(n > 10);
    assert.ok(!existsSync(path.join(dir, 'working.data')), 'reading writes nothing');
  } finally {
    await store.close();
    await src.close();
  }
});
