// Tensor element types, int64 fields, inline tensor bytes and float16/bfloat16 conversion.
// Byte layout everywhere: ONNX raw_data is little-endian, row-major (C order).
import { DataType, type TensorProto } from './proto';
import { ModelFormatError } from './errors';
import type { WeightDtype } from './types';

/** protobufjs hands int64 fields back as `Long` objects (or numbers when small and hand-built). */
export interface LongLike {
  low: number;
  high: number;
  unsigned?: boolean;
  toNumber?: () => number;
}

/** int64 (number | Long) → number; exact up to 2^53. */
export function toNumber(v: number | LongLike | null | undefined): number {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return v;
  if (typeof v.toNumber === 'function') return v.toNumber();
  return v.high * 4294967296 + (v.unsigned ? v.low >>> 0 : v.low >>> 0);
}

/** Bytes per element, or undefined for types we can't size (string, unknown). */
export function elementSize(dataType: number): number | undefined {
  switch (dataType) {
    case DataType.FLOAT:
    case DataType.INT32:
    case DataType.UINT32:
      return 4;
    case DataType.UINT8:
    case DataType.INT8:
    case DataType.BOOL:
      return 1;
    case DataType.UINT16:
    case DataType.INT16:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      return 2;
    case DataType.INT64:
    case DataType.UINT64:
    case DataType.DOUBLE:
    case DataType.COMPLEX64:
      return 8;
    case DataType.COMPLEX128:
      return 16;
    default:
      return undefined;
  }
}

export function dataTypeName(dataType: number): string {
  const names: Record<number, string> = {
    0: 'undefined', 1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
    8: 'string', 9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 14: 'complex64',
    15: 'complex128', 16: 'bfloat16', 17: 'float8e4m3fn', 18: 'float8e4m3fnuz', 19: 'float8e5m2',
    20: 'float8e5m2fnuz', 21: 'uint4', 22: 'int4',
  };
  return names[dataType] ?? `type ${dataType}`;
}

export function weightDtypeOf(dataType: number): WeightDtype | undefined {
  switch (dataType) {
    case DataType.FLOAT:
      return 'float32';
    case DataType.FLOAT16:
      return 'float16';
    case DataType.BFLOAT16:
      return 'bfloat16';
    default:
      return undefined;
  }
}

export function dataTypeOfWeight(dtype: WeightDtype): number {
  switch (dtype) {
    case 'float32':
      return DataType.FLOAT;
    case 'float16':
      return DataType.FLOAT16;
    case 'bfloat16':
      return DataType.BFLOAT16;
    default: {
      const never: never = dtype;
      return never;
    }
  }
}

/** name, dims, data_type and doc_string of a tensor, as own fields only (keeps encoded bytes stable). */
export function tensorHeader(t: TensorProto): TensorProto {
  const out: TensorProto = { name: t.name, dims: t.dims, dataType: t.dataType };
  if (Object.prototype.hasOwnProperty.call(t, 'docString') && t.docString) out.docString = t.docString;
  return out;
}

export function tensorDims(t: TensorProto): number[] {
  return (t.dims ?? []).map((d) => toNumber(d as number | LongLike));
}

export function elementCount(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === 1 || (t.externalData?.length ?? 0) > 0;
}

/** The `location`/`offset`/`length` entries of an external tensor (offset/length may be absent). */
export function externalDataEntry(t: TensorProto): { location: string; offset: number; length?: number } {
  let location: string | undefined;
  let offset = 0;
  let length: number | undefined;
  for (const e of t.externalData ?? []) {
    if (e.key === 'location') location = e.value ?? undefined;
    else if (e.key === 'offset') offset = Number(e.value);
    else if (e.key === 'length') length = Number(e.value);
  }
  if (!location) {
    throw new ModelFormatError(
      'external-data-invalid',
      `initializer "${t.name}" is marked as external data but has no "location"; re-export the model with onnx.save(..., save_as_external_data=True)`,
    );
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || (length !== undefined && (!Number.isSafeInteger(length) || length < 0))) {
    throw new ModelFormatError(
      'external-data-invalid',
      `initializer "${t.name}" has an invalid external-data offset/length; re-export the model's external data`,
    );
  }
  return { location, offset, length };
}

/**
 * The little-endian bytes of a tensor stored inside the model (raw_data or a typed field).
 * Returns a view of raw_data when possible (no copy). Not for external tensors.
 */
export function inlineTensorBytes(t: TensorProto): Uint8Array {
  const dataType = t.dataType ?? 0;
  const count = elementCount(tensorDims(t));
  const size = elementSize(dataType);
  if (size === undefined) {
    throw new ModelFormatError(
      'unsupported-dtype',
      `initializer "${t.name}" has element type ${dataTypeName(dataType)}, which OBR Studio can't read; export the model with float32, float16 or bfloat16 weights`,
    );
  }
  const expected = count * size;
  if (t.rawData && t.rawData.length > 0) {
    if (t.rawData.length !== expected) {
      throw new ModelFormatError(
        'truncated',
        `initializer "${t.name}" holds ${t.rawData.length} bytes but its shape [${tensorDims(t).join(', ')}] of ${dataTypeName(dataType)} needs ${expected}; the file is damaged — re-export it`,
      );
    }
    return t.rawData;
  }
  const out = new Uint8Array(expected);
  const view = new DataView(out.buffer);
  const need = (have: number) => {
    if (have !== count) {
      throw new ModelFormatError(
        'truncated',
        `initializer "${t.name}" holds ${have} values but its shape [${tensorDims(t).join(', ')}] needs ${count}; the file is damaged — re-export it`,
      );
    }
  };
  switch (dataType) {
    case DataType.FLOAT: {
      const src = t.floatData ?? [];
      need(src.length);
      for (let i = 0; i < count; i++) view.setFloat32(i * 4, src[i], true);
      break;
    }
    case DataType.DOUBLE: {
      const src = t.doubleData ?? [];
      need(src.length);
      for (let i = 0; i < count; i++) view.setFloat64(i * 8, src[i], true);
      break;
    }
    case DataType.INT32:
    case DataType.INT16:
    case DataType.INT8:
    case DataType.UINT16:
    case DataType.UINT8:
    case DataType.BOOL:
    case DataType.FLOAT16:
    case DataType.BFLOAT16: {
      // int32_data carries the bits of all ≤ 32-bit integer types and of float16/bfloat16.
      const src = t.int32Data ?? [];
      need(src.length);
      for (let i = 0; i < count; i++) {
        const v = src[i];
        if (size === 4) view.setInt32(i * 4, v, true);
        else if (size === 2) view.setUint16(i * 2, v & 0xffff, true);
        else out[i] = v & 0xff;
      }
      break;
    }
    case DataType.INT64: {
      const src = t.int64Data ?? [];
      need(src.length);
      for (let i = 0; i < count; i++) view.setBigInt64(i * 8, BigInt(toNumber(src[i] as number | LongLike)), true);
      break;
    }
    case DataType.UINT32:
    case DataType.UINT64: {
      const src = t.uint64Data ?? [];
      need(src.length);
      for (let i = 0; i < count; i++) {
        const v = toNumber(src[i] as number | LongLike);
        if (size === 4) view.setUint32(i * 4, v, true);
        else view.setBigUint64(i * 8, BigInt(v), true);
      }
      break;
    }
    default:
      throw new ModelFormatError(
        'unsupported-dtype',
        `initializer "${t.name}" has element type ${dataTypeName(dataType)} stored in a typed field OBR Studio can't read; store it as raw_data`,
      );
  }
  return out;
}

// ---- float16 / bfloat16 ------------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits → number (exact). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 5.960464477539063e-8; // 2^-24
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** number → IEEE half bits, round to nearest even (what numpy's astype(float16) does). */
export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) r++;
  return sign | r; // a carry into the exponent is the correct rounding (up to Inf)
}

export function bf16ToFloat(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0];
}

/** number → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Little-endian bytes of a float tensor (fp32/fp16/bf16/fp64) → values. */
export function decodeFloats<T extends Float32Array | Float64Array>(bytes: Uint8Array, dataType: number, out: T): T {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = out.length;
  switch (dataType) {
    case DataType.FLOAT:
      if (out instanceof Float32Array) {
        // Byte copy: works whatever raw_data's alignment inside the protobuf buffer.
        new Uint8Array(out.buffer, out.byteOffset, n * 4).set(bytes.subarray(0, n * 4));
      } else {
        for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      }
      break;
    case DataType.DOUBLE:
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case DataType.FLOAT16: {
      // A lookup table is ~4× faster than halfToFloat per element for big tensors.
      const table = halfTable();
      for (let i = 0; i < n; i++) out[i] = table[view.getUint16(i * 2, true)];
      break;
    }
    case DataType.BFLOAT16:
      for (let i = 0; i < n; i++) out[i] = bf16ToFloat(view.getUint16(i * 2, true));
      break;
    default:
      throw new ModelFormatError(
        'unsupported-dtype',
        `weights of element type ${dataTypeName(dataType)} can't be read as floats; OBR Studio reads float32, float16 and bfloat16 weights`,
      );
  }
  return out;
}

/** values → little-endian bytes of a float tensor type (fp32/fp16/bf16/fp64), rounding to nearest even. */
export function encodeFloats(values: ArrayLike<number>, dataType: number): Uint8Array {
  const n = values.length;
  switch (dataType) {
    case DataType.FLOAT: {
      const out = Float32Array.from(values as ArrayLike<number>);
      return new Uint8Array(out.buffer);
    }
    case DataType.DOUBLE: {
      const out = Float64Array.from(values as ArrayLike<number>);
      return new Uint8Array(out.buffer);
    }
    case DataType.FLOAT16: {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToHalf(values[i]);
      return new Uint8Array(out.buffer);
    }
    case DataType.BFLOAT16: {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToBf16(values[i]);
      return new Uint8Array(out.buffer);
    }
    default:
      throw new ModelFormatError(
        'unsupported-dtype',
        `can't write weights of element type ${dataTypeName(dataType)}; OBR Studio writes float32, float16 and bfloat16 weights`,
      );
  }
}

let halfLookup: Float32Array | undefined;
function halfTable(): Float32Array {
  if (!halfLookup) {
    halfLookup = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfLookup[h] = halfToFloat(h);
  }
  return halfLookup;
}
