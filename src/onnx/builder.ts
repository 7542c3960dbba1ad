// Small helpers to build ONNX graphs in memory (probe graphs, transforms, tests).
import { onnx, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './proto';

export function floatTensor(name: string, dims: number[], data: ArrayLike<number>): TensorProto {
  const values = Float32Array.from(data);
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.FLOAT,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

export function int64Tensor(name: string, dims: number[], data: ArrayLike<number>): TensorProto {
  const values = BigInt64Array.from(Array.from(data, (v) => BigInt(v)));
  return {
    name,
    dims,
    dataType: onnx.TensorProto.DataType.INT64,
    rawData: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

/** A value info with a tensor type; string dims are symbolic (dynamic) dimensions. */
export function valueInfo(name: string, elemType: number, dims: Array<number | string>): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

export function node(
  opType: string,
  inputs: string[],
  outputs: string[],
  name: string,
  attributes: onnx.IAttributeProto[] = [],
  domain = '',
): NodeProto {
  return { opType, input: inputs, output: outputs, name, attribute: attributes, domain };
}

export function intAttr(name: string, value: number): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

export function intsAttr(name: string, values: number[]): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: values };
}

export function floatAttr(name: string, value: number): onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: value };
}

export function model(
  graph: onnx.IGraphProto,
  opset = 17,
  extraOpsets: Array<{ domain: string; version: number }> = [],
): ModelProto {
  return {
    irVersion: 8,
    producerName: 'obr-studio',
    opsetImport: [{ domain: '', version: opset }, ...extraOpsets],
    graph,
  };
}
