// The ONNX protobuf schema, via the protobufjs-generated `onnx-proto` package. Everything else in
// src/onnx goes through these re-exports so the protobuf library can be swapped in one place.
import { onnx } from 'onnx-proto';

export { onnx };
export type ModelProto = onnx.IModelProto;
export type GraphProto = onnx.IGraphProto;
export type NodeProto = onnx.INodeProto;
export type TensorProto = onnx.ITensorProto;
export type ValueInfoProto = onnx.IValueInfoProto;
export type AttributeProto = onnx.IAttributeProto;
export const DataType = onnx.TensorProto.DataType;

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export function decodeModel(bytes: Uint8Array): onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
