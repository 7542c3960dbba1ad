// A small copy-on-write graph editor for transforms: fresh names, constants, nodes appended in
// topological order, graph outputs, and the opset-dependent spellings of common ops (Unsqueeze /
// Squeeze / ReduceSum take `axes` as an attribute before opset 13 and as an input from 13 on).
import { DataType, type ModelProto, type NodeProto, type TensorProto } from './proto';
import { floatTensor, int64Tensor, intAttr, intsAttr, node, valueInfo } from './builder';
import { cloneModel, NameAllocator, opsetVersion } from './graph';

export class GraphEditor {
  readonly model: ModelProto;
  readonly names: NameAllocator;
  /** Default-domain opset the graph imports. */
  readonly opset: number;
  private readonly appended: NodeProto[] = [];

  /** Clones `source` (see cloneModel); the source is never changed. */
  constructor(source: ModelProto, readonly prefix = 'obr') {
    this.model = cloneModel(source);
    this.names = new NameAllocator(this.model.graph!);
    this.opset = opsetVersion(this.model) ?? 13;
  }

  fresh(base: string): string {
    return this.names.fresh(`/${this.prefix}/${base}`);
  }

  /** Appends a node (after all existing nodes) and returns its output names. */
  op(opType: string, inputs: string[], outputs: number | string[] = 1, attributes: NodeProto['attribute'] = [], domain = ''): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, (_, i) => this.fresh(`${opType}_output_${i}`)) : outputs;
    this.appended.push(node(opType, inputs, outs, this.fresh(opType), attributes ?? [], domain));
    return outs;
  }

  one(opType: string, inputs: string[], attributes: NodeProto['attribute'] = [], domain = ''): string {
    return this.op(opType, inputs, 1, attributes, domain)[0];
  }

  initializer(t: TensorProto): string {
    this.model.graph!.initializer!.push(t);
    return t.name ?? '';
  }

  int64(base: string, values: number[], dims = [values.length]): string {
    return this.initializer(int64Tensor(this.fresh(base), dims, values));
  }

  float(base: string, values: number[], dims = [values.length]): string {
    return this.initializer(floatTensor(this.fresh(base), dims, values));
  }

  unsqueeze(x: string, axes: number[]): string {
    return this.opset >= 13
      ? this.one('Unsqueeze', [x, this.int64('axes', axes)])
      : this.one('Unsqueeze', [x], [intsAttr('axes', axes)]);
  }

  squeeze(x: string, axes: number[]): string {
    return this.opset >= 13
      ? this.one('Squeeze', [x, this.int64('axes', axes)])
      : this.one('Squeeze', [x], [intsAttr('axes', axes)]);
  }

  /** ReduceSum over `axes` (all axes when empty). */
  reduceSum(x: string, axes: number[], keepdims: boolean): string {
    const keep = intAttr('keepdims', keepdims ? 1 : 0);
    if (axes.length === 0) return this.one('ReduceSum', [x], [keep]);
    return this.opset >= 13
      ? this.one('ReduceSum', [x, this.int64('axes', axes)], [keep])
      : this.one('ReduceSum', [x], [keep, intsAttr('axes', axes)]);
  }

  /** Slice along `axes` with constant starts/ends (opset ≥ 10). */
  slice(x: string, starts: number[] | string, ends: number[] | string, axes: number[]): string {
    const s = typeof starts === 'string' ? starts : this.int64('starts', starts);
    const e = typeof ends === 'string' ? ends : this.int64('ends', ends);
    return this.one('Slice', [x, s, e, this.int64('axes', axes)]);
  }

  cast(x: string, to: number): string {
    return this.one('Cast', [x], [intAttr('to', to)]);
  }

  /** Declares a graph output (elemType e.g. DataType.FLOAT; string dims are symbolic). */
  output(name: string, elemType: number = DataType.FLOAT, dims: Array<number | string> = []): void {
    this.model.graph!.output!.push(valueInfo(name, elemType, dims));
  }

  /** Copies a tensor to a chosen name (e.g. a stable graph-output name). */
  identity(x: string, outputName: string): void {
    this.op('Identity', [x], [outputName]);
  }

  /** The edited model: appended nodes go after the existing ones (they only read earlier tensors). */
  finish(): ModelProto {
    this.model.graph!.node!.push(...this.appended);
    this.appended.length = 0;
    return this.model;
  }
}

/** A Slice end meaning "to the end" (exact as a double, so it survives int64 encoding). */
export const SLICE_TO_END = 2 ** 62;
