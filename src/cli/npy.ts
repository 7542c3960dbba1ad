// NumPy .npy read/write (format versions 1.0, 2.0, 3.0; little-endian float32/float64, C order).
// Spec: numpy.lib.format — magic "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 for
// 2.x/3.x), a Python-literal dict {'descr', 'fortran_order', 'shape'} padded to 64 bytes.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export class NpyError extends Error {
  override name = 'NpyError';
}

export type NpyDtype = 'float32' | 'float64';

export interface NpyArray {
  dtype: NpyDtype;
  shape: number[];
  /** Values converted to float64, C order. */
  data: Float64Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

/** Parses the header dict literal, accepting only the three keys numpy writes. */
function parseHeader(text: string, file: string): { descr: string; fortran: boolean; shape: number[] } {
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(text);
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(text);
  const shape = /'shape'\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr || !fortran || !shape || !/^\s*\{/.test(text)) throw new NpyError(`${file}: malformed .npy header`);
  const dims = shape[1]
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      if (!/^\d+L?$/.test(s)) throw new NpyError(`${file}: malformed shape in .npy header`);
      return Number.parseInt(s, 10);
    });
  return { descr: descr[1], fortran: fortran[1] === 'True', shape: dims };
}

export function parseNpy(buf: Uint8Array, file = '<buffer>'): NpyArray {
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b)) throw new NpyError(`${file}: not a NumPy .npy file (bad magic)`);
  const major = buf[6];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let headerLen: number;
  let offset: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    offset = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) throw new NpyError(`${file}: truncated .npy header`);
    headerLen = view.getUint32(8, true);
    offset = 12;
  } else {
    throw new NpyError(`${file}: unsupported .npy format version ${major}.${buf[7]}`);
  }
  if (offset + headerLen > buf.length) throw new NpyError(`${file}: truncated .npy header`);
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(buf.subarray(offset, offset + headerLen));
  const { descr, fortran, shape } = parseHeader(header, file);
  if (fortran) throw new NpyError(`${file}: Fortran-order arrays are not supported; save with np.ascontiguousarray(a)`);
  let dtype: NpyDtype;
  let size: number;
  if (descr === '<f4' || descr === '|f4' || (descr === '=f4')) {
    dtype = 'float32';
    size = 4;
  } else if (descr === '<f8' || descr === '=f8') {
    dtype = 'float64';
    size = 8;
  } else {
    throw new NpyError(`${file}: dtype "${descr}" is not supported; use little-endian float32 or float64`);
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLen;
  if (buf.length - start !== count * size) {
    throw new NpyError(`${file}: data has ${buf.length - start} bytes, shape (${shape.join(', ')}) of ${dtype} needs ${count * size}`);
  }
  const data = new Float64Array(count);
  const dv = new DataView(buf.buffer, buf.byteOffset + start, count * size);
  if (size === 4) for (let i = 0; i < count; i++) data[i] = dv.getFloat32(i * 4, true);
  else for (let i = 0; i < count; i++) data[i] = dv.getFloat64(i * 8, true);
  return { dtype, shape, data };
}

export function readNpy(path: string): NpyArray {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new NpyError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseNpy(buf, path);
}

/** Serializes to .npy version 1.0 (2.0 when the header would not fit a u16). */
export function formatNpy(data: ArrayLike<number>, shape: readonly number[], dtype: NpyDtype): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new NpyError(`formatNpy: ${data.length} values for shape (${shape.join(', ')})`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  const dict = `{'descr': '${dtype === 'float32' ? '<f4' : '<f8'}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  let major = 1;
  let pre = 10;
  let total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  if (total - pre > 0xffff) {
    major = 2;
    pre = 12;
    total = Math.ceil((pre + dict.length + 1) / 64) * 64;
  }
  const headerLen = total - pre;
  const header = dict.padEnd(headerLen - 1, ' ') + '\n';
  const size = dtype === 'float32' ? 4 : 8;
  const out = new Uint8Array(total + count * size);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  const dv = new DataView(out.buffer);
  if (major === 1) dv.setUint16(8, headerLen, true);
  else dv.setUint32(8, headerLen, true);
  for (let i = 0; i < header.length; i++) out[pre + i] = header.charCodeAt(i);
  if (size === 4) for (let i = 0; i < count; i++) dv.setFloat32(total + i * 4, data[i], true);
  else for (let i = 0; i < count; i++) dv.setFloat64(total + i * 8, data[i], true);
  return out;
}

/** Writes atomically: a temp file in the same folder, fsync, then rename over the target. */
export function writeNpyAtomic(path: string, data: ArrayLike<number>, shape: readonly number[], dtype: NpyDtype): void {
  const bytes = formatNpy(data, shape, dtype);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, bytes);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // temp file may not exist
    }
    throw new NpyError(`${path}: cannot write (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
