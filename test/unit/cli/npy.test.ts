import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { formatNpy, NpyError, parseNpy, readNpy, writeNpyAtomic } from '../../../src/cli/npy';

/** A .npy file built by hand the way numpy writes it (for versions numpy picks rarely). */
function handMade(major: number, dict: string, payload: Uint8Array): Uint8Array {
  const pre = major === 1 ? 10 : 12;
  const total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  const header = dict.padEnd(total - pre - 1, ' ') + '\n';
  const out = new Uint8Array(total + payload.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]);
  const dv = new DataView(out.buffer);
  if (major === 1) dv.setUint16(8, header.length, true);
  else dv.setUint32(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[pre + i] = header.charCodeAt(i);
  out.set(payload, total);
  return out;
}

test('round-trips float32 and float64 in C order, 1-D and 2-D', () => {
  const data = [1.5, -2, 0, 3.25, 1e-3, -7];
  for (const dtype of ['float32', 'float64'] as const) {
    for (const shape of [[6], [2, 3], [3, 2]]) {
      const a = parseNpy(formatNpy(data, shape, dtype));
      assert.equal(a.dtype, dtype);
      assert.deepEqual(a.shape, shape);
      assert.deepEqual(Array.from(a.data), dtype === 'float32' ? data.map((v) => Math.fround(v)) : data);
    }
  }
  // Header is padded to a multiple of 64 bytes (format spec).
  const bytes = formatNpy(data, [2, 3], 'float64');
  assert.equal((bytes.length - 48) % 64, 0);
});

test('reads version 2.0 and 3.0 headers', () => {
  const payload = new Uint8Array(new Float64Array([1, 2, 3, 4]).buffer);
  for (const major of [2, 3]) {
    const a = parseNpy(handMade(major, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", payload));
    assert.deepEqual(a.shape, [2, 2]);
    assert.deepEqual(Array.from(a.data), [1, 2, 3, 4]);
  }
});

test('rejects garbage, truncation, Fortran order and unsupported dtypes with NpyError', () => {
  const good = formatNpy([1, 2, 3, 4], [2, 2], 'float32');
  const payload = new Uint8Array(new Float64Array([1, 2, 3, 4]).buffer);
  const cases: Array<[Uint8Array, RegExp]> = [
    [new TextEncoder().encode('hello world, not numpy'), /bad magic/],
    [good.subarray(0, good.length - 3), /bytes/],
    [handMade(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", payload), /Fortran/],
    [handMade(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", payload), /dtype/],
    [handMade(1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2), }", payload), /dtype/],
    [handMade(1, "{'descr': '<f8', 'fortran_order': False }", payload), /header/],
    [handMade(7, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }", payload), /version/],
  ];
  for (const [bytes, re] of cases) {
    assert.throws(() => parseNpy(bytes, 'x.npy'), (e: unknown) => e instanceof NpyError && e.name === 'NpyError' && re.test((e as Error).message), String(re));
  }
  assert.throws(() => readNpy('/nonexistent/dir/w.npy'), NpyError);
});

test('writeNpyAtomic leaves no temp file and replaces the target', () => {
  const dir = mkdtempSync(join(tmpdir(), 'npy-'));
  try {
    const p = join(dir, 'q.npy');
    writeNpyAtomic(p, [1, 2], [2], 'float64');
    writeNpyAtomic(p, [3, 4, 5], [3], 'float32');
    assert.deepEqual(readdirSync(dir), ['q.npy']);
    const a = parseNpy(readFileSync(p));
    assert.deepEqual(Array.from(a.data), [3, 4, 5]);
    assert.throws(() => writeNpyAtomic(join(dir, 'missing', 'q.npy'), [1], [1], 'float64'), NpyError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
