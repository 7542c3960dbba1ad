"""Exports a trained checkpoint to Optimum-shaped ONNX files: export.py SIZE CKPT TOKENIZER_DIR OUT_DIR.

Writes model.onnx, model_with_past.onnx, model.fp16.onnx, model.external.onnx(.data), config.json and
copies tokenizer.json / tokenizer_config.json. Opset 17."""
import json
import os
import re
import shutil
import sys

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper, TensorProto

from common import SIZES, EOT
from model import LlamaConfig, LlamaForCausalLM

OPSET = 17
EXTERNAL_THRESHOLD = 1024  # bytes: every projection / embedding goes to the .data file


def module_path(param_name):
    """'model.layers.0.self_attn.q_proj.weight' -> '/model/layers.0/self_attn/q_proj'."""
    mod = param_name.rsplit('.', 1)[0]
    return '/' + re.sub(r'layers/(\d+)', r'layers.\1', mod.replace('.', '/'))


def rename_value(graph, old, new):
    for n in graph.node:
        for i, x in enumerate(n.input):
            if x == old:
                n.input[i] = new
        for i, x in enumerate(n.output):
            if x == old:
                n.output[i] = new
    for coll in (graph.initializer,):
        for t in coll:
            if t.name == old:
                t.name = new
    for coll in (graph.output, graph.value_info):
        for v in coll:
            if v.name == old:
                v.name = new


def postprocess(model, state):
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    # the exporter shares equal parameters through Identity nodes (e.g. all-ones norms): materialize them
    for n in list(g.node):
        if n.op_type == 'Identity' and n.input[0] in inits and n.output[0] in state:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[n.input[0]]), n.output[0])
            g.initializer.append(t)
            inits[t.name] = t
            g.node.remove(n)
    consumers = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    linear = [k for k, v in state.items() if k.endswith('_proj.weight') or k == 'lm_head.weight']
    expected = {module_path(k) + '/MatMul': k for k in linear}
    found = set()
    for n in g.node:
        if n.op_type != 'MatMul' or n.name not in expected:
            continue
        pname = expected[n.name]
        w = n.input[1]
        assert w in inits, (n.name, w)
        arr = numpy_helper.to_array(inits[w])
        ref = state[pname].numpy().T
        assert arr.shape == ref.shape and np.array_equal(arr, ref), (n.name, arr.shape, ref.shape)
        assert len(consumers[w]) == 1, (w, [c.name for c in consumers[w]])
        if w != pname:
            assert pname not in inits, pname
            rename_value(g, w, pname)
            inits[pname] = inits.pop(w)
        found.add(pname)
    missing = set(linear) - found
    assert not missing, f'MatMul nodes not found for {sorted(missing)}'
    # the embedding (Gather input 0) and the RMSNorm weights (Mul input 1) keep their state-dict names; the
    # exporter may share one initializer between equal tensors (e.g. all-ones norms), so give each its own
    by_name = {n.name: n for n in g.node}
    for k in state:
        if k in found:
            continue
        node_name, slot = ((module_path(k) + '/Gather', 0) if k.endswith('embed_tokens.weight')
                           else (module_path(k) + '/Mul', 1))
        n = by_name[node_name]
        cur = n.input[slot]
        assert cur in inits, (k, node_name, cur)
        np.testing.assert_array_equal(numpy_helper.to_array(inits[cur]), state[k].numpy())
        if cur != k:
            assert k not in inits, k
            t = numpy_helper.from_array(numpy_helper.to_array(inits[cur]), k)
            g.initializer.append(t)
            inits[k] = t
            n.input[slot] = k
    used = {x for n in g.node for x in n.input}
    for t in list(g.initializer):
        if t.name not in used:
            g.initializer.remove(t)
    # readable names for anonymous nodes (exporter constants): the module path of their first consumer
    consumers = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    taken = {n.name for n in g.node if n.name}
    for n in g.node:
        if n.name:
            continue
        users = [c for o in n.output for c in consumers.get(o, []) if c.name]
        scope = users[0].name.rsplit('/', 1)[0] if users else ''
        k = 0
        while f'{scope}/{n.op_type}_anon_{k}' in taken:
            k += 1
        n.name = f'{scope}/{n.op_type}_anon_{k}'
        taken.add(n.name)
    return model


def to_fp16(model, param_names):
    """Weights stored as float16, each followed by a Cast to float32 (I/O stays float32)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    casts = []
    for t in g.initializer:
        if t.name not in param_names or t.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(t).astype(np.float16)
        new = numpy_helper.from_array(arr, t.name)
        t.CopyFrom(new)
        out = t.name + '_fp32'
        for n in g.node:
            for i, x in enumerate(n.input):
                if x == t.name:
                    n.input[i] = out
        casts.append(helper.make_node('Cast', [t.name], [out], name=module_path(t.name) + '/' + t.name.rsplit('.', 1)[1] + '/Cast',
                                      to=TensorProto.FLOAT))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


def export(size, ckpt, tok_dir, out_dir):
    cfg = LlamaConfig(**SIZES[size])
    model = LlamaForCausalLM(cfg)
    sd = torch.load(ckpt, map_location='cpu')
    model.load_state_dict(sd['model'])
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, '.export-tmp')
    os.makedirs(tmp, exist_ok=True)

    b, s, past = 2, 7, 3
    ids = torch.randint(0, cfg.vocab_size, (b, s))
    pos = torch.arange(s).unsqueeze(0).expand(b, s).contiguous()
    mask = torch.ones(b, s, dtype=torch.long)
    axes = {'input_ids': {0: 'batch_size', 1: 'sequence_length'},
            'attention_mask': {0: 'batch_size', 1: 'total_sequence_length'},
            'position_ids': {0: 'batch_size', 1: 'sequence_length'},
            'logits': {0: 'batch_size', 1: 'sequence_length'}}
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask, pos), os.path.join(tmp, 'nopast.onnx'), opset_version=OPSET,
                          input_names=['input_ids', 'attention_mask', 'position_ids'], output_names=['logits'],
                          dynamic_axes=axes, do_constant_folding=True)
        L, kv, d = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
        pkv = tuple((torch.randn(b, kv, past, d), torch.randn(b, kv, past, d)) for _ in range(L))
        in_names = ['input_ids', 'attention_mask', 'position_ids']
        out_names = ['logits']
        axes_p = dict(axes)
        for i in range(L):
            for kind in ('key', 'value'):
                in_names.append(f'past_key_values.{i}.{kind}')
                axes_p[f'past_key_values.{i}.{kind}'] = {0: 'batch_size', 2: 'past_sequence_length'}
        for i in range(L):
            for kind in ('key', 'value'):
                out_names.append(f'present.{i}.{kind}')
                axes_p[f'present.{i}.{kind}'] = {0: 'batch_size', 2: 'total_sequence_length'}
        pos_p = (torch.arange(s) + past).unsqueeze(0).expand(b, s).contiguous()
        mask_p = torch.ones(b, past + s, dtype=torch.long)
        torch.onnx.export(model, (ids, mask_p, pos_p, pkv), os.path.join(tmp, 'past.onnx'), opset_version=OPSET,
                          input_names=in_names, output_names=out_names, dynamic_axes=axes_p, do_constant_folding=True)

    meta = {'producer': 'OBR Studio scripts/models/export.py', 'source': f'scripts/models (size {size})'}
    for src, dst in (('nopast.onnx', 'model.onnx'), ('past.onnx', 'model_with_past.onnx')):
        m = onnx.load(os.path.join(tmp, src))
        postprocess(m, state)
        m.producer_name = 'obr-studio'
        for k, v in meta.items():
            m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
        onnx.checker.check_model(m)
        onnx.save_model(m, os.path.join(out_dir, dst))
        if dst == 'model.onnx':
            fp32 = m
    fp16 = to_fp16(fp32, set(state.keys()))
    onnx.checker.check_model(fp16)
    onnx.save_model(fp16, os.path.join(out_dir, 'model.fp16.onnx'))
    ext = onnx.ModelProto()
    ext.CopyFrom(fp32)
    data = os.path.join(out_dir, 'model.external.onnx.data')
    if os.path.exists(data):
        os.remove(data)
    onnx.save_model(ext, os.path.join(out_dir, 'model.external.onnx'), save_as_external_data=True,
                    all_tensors_to_one_file=True, location='model.external.onnx.data',
                    size_threshold=EXTERNAL_THRESHOLD, convert_attribute=False)
    shutil.rmtree(tmp)

    tok = json.load(open(os.path.join(tok_dir, 'tokenizer.json'), encoding='utf-8'))
    eot = tok['model']['vocab'][EOT]
    config = {
        'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
        'vocab_size': cfg.vocab_size, 'hidden_size': cfg.hidden_size, 'intermediate_size': cfg.intermediate_size,
        'num_hidden_layers': cfg.num_hidden_layers, 'num_attention_heads': cfg.num_attention_heads,
        'num_key_value_heads': cfg.num_key_value_heads, 'head_dim': cfg.head_dim,
        'max_position_embeddings': cfg.max_position_embeddings, 'rms_norm_eps': cfg.rms_norm_eps,
        'rope_theta': cfg.rope_theta, 'rope_scaling': None, 'hidden_act': 'silu', 'attention_bias': False,
        'mlp_bias': False, 'tie_word_embeddings': False, 'bos_token_id': eot, 'eos_token_id': eot,
        'initializer_range': 0.02, 'use_cache': True, 'torch_dtype': 'float32',
        'obr_studio': {'size': size, 'training_steps': sd['step'], 'trained_on': 'media/text/README.md (SOTU train split)'},
    }
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
        f.write('\n')
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        shutil.copyfile(os.path.join(tok_dir, name), os.path.join(out_dir, name))
    print('exported', size, 'step', sd['step'], '->', out_dir)


if __name__ == '__main__':
    export(*sys.argv[1:5])
