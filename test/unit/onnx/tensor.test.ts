import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataType } from '../../../src/onnx/proto';
import {
  bf16ToFloat,
  decodeFloats,
  encodeFloats,
  floatToBf16,
  floatToHalf,
  halfToFloat,
  inlineTensorBytes,
  toNumber,
} from '../../../src/onnx/tensor';

test('float16: known bit patterns both ways (numpy reference values)', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [0.5, 0x3800],
    [5.960464477539063e-8, 0x0001], [6.103515625e-5, 0x0400], [Infinity, 0x7c00], [-Infinity, 0xfc00],
  ];
  for (const [v, h] of cases) {
    assert.equal(floatToHalf(v), h, `floatToHalf(${v})`);
    assert.equal(halfToFloat(h), v, `halfToFloat(${h})`);
  }
  assert.ok(Number.isNaN(halfToFloat(floatToHalf(NaN))));
  // Round to nearest even: 1 + 2^-11 is a tie between 1 and 1 + 2^-10 → 1 (even mantissa).
  assert.equal(floatToHalf(1 + 2 ** -11), 0x3c00);
  assert.equal(floatToHalf(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(floatToHalf(70000), 0x7c00); // overflow → Inf
  assert.equal(floatToHalf(1e-9), 0); // underflow → 0
});

test('float16: every half value survives half → float → half', () => {
  for (let h = 0; h < 65536; h++) {
    const e = (h >> 10) & 0x1f;
    if (e === 31 && h & 0x3ff) continue; // NaN payloads
    assert.equal(floatToHalf(halfToFloat(h)), h);
  }
});

test('bfloat16: round to nearest even and exact round trip', () => {
  assert.equal(floatToBf16(1), 0x3f80);
  assert.equal(bf16ToFloat(0x3f80), 1);
  assert.equal(floatToBf16(-3.5), 0xc060);
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7 → 1.
  assert.equal(floatToBf16(1 + 2 ** -8), 0x3f80);
  assert.equal(floatToBf16(1 + 3 * 2 ** -8), 0x3f82);
  for (let b = 0; b < 65536; b += 7) {
    if ((b & 0x7f80) === 0x7f80 && b & 0x7f) continue;
    assert.equal(floatToBf16(bf16ToFloat(b)), b);
  }
});

test('encodeFloats/decodeFloats round trip per type', () => {
  const values = [0, 1, -2.5, 1024, 3.140625];
  for (const dt of [DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]) {
    const back = decodeFloats(encodeFloats(values, dt), dt, new Float64Array(values.length));
    assert.deepEqual(Array.from(back), values, `type ${dt}`);
  }
  // Unaligned raw_data (protobuf views start anywhere) still decodes.
  const raw = new Uint8Array(13);
  raw.set(encodeFloats([1.5, -4, 8], DataType.FLOAT), 1);
  assert.deepEqual(Array.from(decodeFloats(raw.subarray(1), DataType.FLOAT, new Float32Array(3))), [1.5, -4, 8]);
});

test('typed fields: float_data, int32_data (fp16 bits), int64_data, double_data', () => {
  const f = inlineTensorBytes({ name: 'f', dims: [2], dataType: DataType.FLOAT, floatData: [1, -2] });
  assert.deepEqual(Array.from(decodeFloats(f, DataType.FLOAT, new Float32Array(2))), [1, -2]);
  const h = inlineTensorBytes({ name: 'h', dims: [2], dataType: DataType.FLOAT16, int32Data: [0x3c00, 0xc000] });
  assert.deepEqual(Array.from(decodeFloats(h, DataType.FLOAT16, new Float32Array(2))), [1, -2]);
  const b = inlineTensorBytes({ name: 'b', dims: [1], dataType: DataType.BFLOAT16, int32Data: [0x3f80] });
  assert.deepEqual(Array.from(decodeFloats(b, DataType.BFLOAT16, new Float32Array(1))), [1]);
  const d = inlineTensorBytes({ name: 'd', dims: [1], dataType: DataType.DOUBLE, doubleData: [0.1] });
  assert.deepEqual(Array.from(decodeFloats(d, DataType.DOUBLE, new Float64Array(1))), [0.1]);
  const i = inlineTensorBytes({ name: 'i', dims: [2], dataType: DataType.INT64, int64Data: [5, -1] });
  assert.deepEqual(Array.from(new BigInt64Array(i.buffer)), [5n, -1n]);
});

test('toNumber handles Long-like int64 values', () => {
  assert.equal(toNumber({ low: 5, high: 1 }), 4294967301);
  assert.equal(toNumber(7), 7);
  assert.equal(toNumber(null), 0);
});
