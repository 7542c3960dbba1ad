"""A LLaMA-architecture decoder (same module names and maths as Hugging Face's LlamaForCausalLM):
RMSNorm, rotary embeddings (rotate_half), grouped-query attention, SwiGLU MLP, untied lm_head,
no biases. The forward is written so that torch.onnx.export gives an Optimum-like graph."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LlamaConfig:
    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
                 intermediate_size, max_position_embeddings, rms_norm_eps=1e-5, rope_theta=10000.0):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.head_dim = hidden_size // num_attention_heads


class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return x / torch.sqrt(variance + self.eps) * self.weight


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, head_dim, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer('inv_freq', inv_freq, persistent=False)

    def forward(self, position_ids):
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq  # [B, S, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)  # [B, 1, S, D]


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.num_kv_heads = c.num_key_value_heads
        self.head_dim = c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, past=None):
        b, s = x.shape[0], x.shape[1]
        d = self.head_dim
        q = self.q_proj(x).view(b, s, self.num_heads, d).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, d).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        present = (k, v)
        rep = self.num_heads // self.num_kv_heads
        if rep > 1:
            t = k.shape[2]
            k = k.unsqueeze(2).expand(b, self.num_kv_heads, rep, t, d).reshape(b, self.num_heads, t, d)
            v = v.unsqueeze(2).expand(b, self.num_kv_heads, rep, t, d).reshape(b, self.num_heads, t, d)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(d))
        scores = torch.where(mask, scores, torch.tensor(torch.finfo(torch.float32).min))
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, self.num_heads * d)
        return self.o_proj(out), present


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.mlp = LlamaMLP(c)
        self.input_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask, past=None):
        h, present = self.self_attn(self.input_layernorm(x), cos, sin, mask, past)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, present


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(c.head_dim, c.rope_theta)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None):
        x = self.embed_tokens(input_ids)
        s = input_ids.shape[1]
        t = attention_mask.shape[1]  # past + s
        q_pos = torch.arange(s) + (t - s)
        k_pos = torch.arange(t)
        causal = k_pos.unsqueeze(0) <= q_pos.unsqueeze(1)  # [s, t]
        mask = causal.unsqueeze(0).unsqueeze(0) & attention_mask.unsqueeze(1).unsqueeze(2).bool()  # [b,1,s,t]
        cos, sin = self.rotary_emb(position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            x, present = layer(x, cos, sin, mask, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        return self.norm(x), presents


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init)
        std = 0.02 / math.sqrt(2 * c.num_hidden_layers)
        for layer in self.model.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, std=std)
            nn.init.normal_(layer.mlp.down_proj.weight, std=std)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None):
        h, presents = self.model(input_ids, attention_mask, position_ids, past_key_values)
        logits = self.lm_head(h)
        if past_key_values is None:
            return logits
        return logits, tuple(presents)

    def loss_logits(self, ids):
        """Training/eval helper: logits for full windows [B, T] (no padding)."""
        b, t = ids.shape
        mask = torch.ones(b, t, dtype=torch.long)
        pos = torch.arange(t).unsqueeze(0).expand(b, t)
        return self.forward(ids, mask, pos)
