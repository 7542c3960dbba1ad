"""Trains one model size on the SOTU train split: train.py SIZE STEPS BATCH LR [--tokenizer-dir DIR].
Writes checkpoints and metrics under .cache/models/SIZE/ (git-ignored)."""
import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import CACHE, SIZES, BPETokenizer, read_text, train_text
from model import LlamaConfig, LlamaForCausalLM

SEED = 0
CTX = 256


def encode_cached(tok, tok_path, name, text):
    from common import sha256
    key = sha256(tok_path)[:16]
    path = os.path.join(CACHE, f'ids-{name}-{key}.npy')
    if os.path.exists(path):
        return np.load(path)
    ids = np.array(tok.encode(text), dtype=np.int64)
    np.save(path, ids)
    return ids


def windows(ids, ctx=CTX):
    """WikiText-2 protocol: numel // ctx non-overlapping windows, remainder dropped."""
    n = len(ids) // ctx
    return torch.from_numpy(ids[: n * ctx].reshape(n, ctx).copy())


@torch.no_grad()
def window_nll(model, wins, batch=16):
    """Mean cross-entropy over the ctx-1 shifted targets of every window."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(wins), batch):
        w = wins[i:i + batch]
        logits = model.loss_logits(w)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), w[:, 1:].reshape(-1), reduction='sum')
        total += loss.item()
        count += w[:, 1:].numel()
    model.train()
    return total / count


def unigram_nll(train_ids, wins, vocab):
    counts = np.bincount(train_ids, minlength=vocab).astype(np.float64)
    logp = np.log((counts + 1) / (counts.sum() + vocab))
    return float(-logp[wins[:, 1:].numpy()].mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('size')
    ap.add_argument('--steps', type=int, required=True)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--tokenizer', required=True)
    ap.add_argument('--eval-every', type=int, default=100)
    ap.add_argument('--out', default=None, help='checkpoint/metrics folder (default .cache/models/SIZE)')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch threads; 1 = deterministic and, on a shared 2-core machine, faster than 2')
    ap.add_argument('--time-budget', type=float, default=0,
                    help='seconds: the cosine schedule follows max(step fraction, time fraction) and training ends '
                         'when either is reached; the learning rates used are saved in metrics.json (lrs)')
    ap.add_argument('--replay-lrs', default=None,
                    help='JSON file with the per-step learning rates of an earlier run (exact regeneration)')
    ap.add_argument('--stop-at', type=float, default=0, help='unix time: stop early (and evaluate) past it')
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    out = args.out or os.path.join(CACHE, args.size)
    os.makedirs(out, exist_ok=True)

    t_start = time.time()
    tok = BPETokenizer(args.tokenizer)
    train_ids = encode_cached(tok, args.tokenizer, 'train', train_text())
    valid_ids = encode_cached(tok, args.tokenizer, 'valid', read_text('sotu-valid.txt'))
    test_ids = encode_cached(tok, args.tokenizer, 'test', read_text('sotu-test.txt'))
    print(f'tokens: train {len(train_ids)} valid {len(valid_ids)} test {len(test_ids)} ({time.time() - t_start:.0f}s)', flush=True)
    valid_w = windows(valid_ids)
    test_w = windows(test_ids)

    cfg = LlamaConfig(**SIZES[args.size])
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    warmup = max(1, args.steps // 20)
    replay = None
    if args.replay_lrs:
        with open(args.replay_lrs) as f:
            replay = json.load(f)
        replay = replay['lrs'] if isinstance(replay, dict) else replay
        args.steps = len(replay)

    def progress(step):
        p = step / args.steps
        if args.time_budget:
            p = max(p, (time.time() - t0) / args.time_budget)
        return p

    def lr_at(step, p):
        if replay is not None:
            return replay[step]
        if step < warmup:
            return args.lr * (step + 1) / warmup
        w = warmup / args.steps
        q = min(1.0, max(0.0, (p - w) / (1 - w)))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))
    lrs = []

    rng = np.random.default_rng(SEED)
    t0 = time.time()
    log = []
    train_loss_ema = None
    metrics = {}

    def save(step, final=False):
        torch.save({'model': model.state_dict(), 'step': step, 'size': args.size}, os.path.join(out, 'ckpt.pt.tmp'))
        os.replace(os.path.join(out, 'ckpt.pt.tmp'), os.path.join(out, 'ckpt.pt'))
        metrics.update({
            'size': args.size, 'params': n_params, 'steps': step, 'planned_steps': args.steps, 'batch': args.batch,
            'context': CTX, 'lr': args.lr, 'seed': SEED, 'tokens_seen': step * args.batch * CTX,
            'train_tokens': int(len(train_ids)), 'train_wall_s': round(time.time() - t0, 1),
            'threads': args.threads, 'time_budget_s': args.time_budget, 'final': final, 'log': log, 'lrs': lrs,
        })
        with open(os.path.join(out, 'metrics.json'), 'w') as f:
            json.dump(metrics, f, indent=1)

    done_steps = args.steps
    for step in range(args.steps):
        if args.stop_at and time.time() > args.stop_at:
            done_steps = step
            print(f'stopping early at step {step}: past --stop-at', flush=True)
            break
        p = progress(step)
        if replay is None and args.time_budget and p >= 1.0:
            done_steps = step
            print(f'time budget reached at step {step}', flush=True)
            break
        lr = lr_at(step, p)
        lrs.append(lr)
        for g in opt.param_groups:
            g['lr'] = lr
        starts = rng.integers(0, len(train_ids) - CTX - 1, size=args.batch)
        batch = torch.from_numpy(np.stack([train_ids[s:s + CTX + 1] for s in starts]))
        logits = model.loss_logits(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        train_loss_ema = lv if train_loss_ema is None else 0.95 * train_loss_ema + 0.05 * lv
        if (step + 1) % 10 == 0:
            print(f'step {step + 1}/{args.steps} loss {lv:.4f} ema {train_loss_ema:.4f} lr {lr:.2e} '
                  f'{time.time() - t0:.0f}s', flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            vl = window_nll(model, valid_w[:64])
            log.append({'step': step + 1, 'train_loss_ema': round(train_loss_ema, 4), 'valid_loss_64w': round(vl, 4),
                        'wall_s': round(time.time() - t0, 1)})
            print(f'== step {step + 1} valid loss (64 windows) {vl:.4f} ppl {math.exp(vl):.2f}', flush=True)
            metrics['train_loss_ema'] = round(train_loss_ema, 4)
            save(step + 1)

    train_wall = time.time() - t0
    vl = window_nll(model, valid_w)
    tl = window_nll(model, test_w)
    un = unigram_nll(train_ids, test_w, cfg.vocab_size)
    metrics.update({'final_train_loss_ema': round(train_loss_ema, 4), 'final_valid_loss': round(vl, 4),
                    'test_windows': len(test_w), 'test_nll': tl, 'test_ppl_python': math.exp(tl),
                    'unigram_test_ppl': math.exp(un), 'valid_ppl': math.exp(vl)})
    save(done_steps, final=True)
    metrics['train_wall_s'] = round(train_wall, 1)
    with open(os.path.join(out, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=1)
    print(f'done: valid loss {vl:.4f}, test ppl {math.exp(tl):.3f} (python, {len(test_w)} windows of {CTX}), '
          f'unigram ppl {math.exp(un):.2f}, train wall {train_wall:.0f}s', flush=True)


if __name__ == '__main__':
    main()
