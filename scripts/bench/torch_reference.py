#!/usr/bin/python3
"""PyTorch reference for `npm run bench:core`: OBR_GPTQ / OBR_RTN on one layer, the way the
official code (github.com/csguoh/OBR, QuaRot/obr_utils.py) runs it: fp32, a Python loop over
rows, per row torch.linalg.cholesky + cholesky_solve of the retained block H[R][:, R] and a
second Cholesky of its trailing block for the E2 -> R2 transfer, then RTN of the first
k = floor(alpha*n) columns and the masked GPTQ tail (blocksize 128) from the full-H inverse
Cholesky factor. Same scale (MSE clip search on the dense W), dead-input handling, damping and
Wanda mask as src/core. Only the two fixes of docs/obr-algorithm.md P4/P5 differ from the
official code, and neither applies to the benchmark layers (alpha*n is a multiple of 128 and no
row is dense).

With --method sparsegpt-gptq: the paper's cheap baseline (OBR_Wrapper.
baseline_with_sparsegpt_gptq_obs, pitfall P15): joint SparseGPT pruning (mask chosen per
128-column block over all rows) and GPTQ quantization with lazy-batch error feedback, fp32,
vectorized over rows.

Usage: torch_reference.py LAYER_DIR [--method obr-gptq|obr-rtn|sparsegpt-gptq] [--alpha 0.5]
       [--damp 0.01] [--wbits 4] [--threads 2] [--rows N] [--device cpu|cuda]
With --device cuda the layer runs on the GPU (as the official code does), timed between CUDA
synchronizations.
LAYER_DIR holds W.npy [out, in], H.npy [in, in] (undamped), act.npy [in] (Wanda energies).
Writes LAYER_DIR/Q_torch_<method>.npy and prints one JSON line: seconds, loss (undamped H,
float64), rows, cols.
"""
import argparse
import json
import os
import time

import numpy as np
import torch


def find_scales(w, bits):
    """Per-row symmetric scale with the MSE shrink search (QuaRot WeightQuantizer, w_clip)."""
    maxq = 2 ** (bits - 1) - 1
    zero = torch.zeros(w.shape[0], dtype=w.dtype)
    xmin = torch.minimum(w.min(1)[0], zero)
    xmax = torch.maximum(w.max(1)[0], zero)
    xmax = torch.maximum(xmin.abs(), xmax)
    xmax[xmax == 0] = 1
    best = torch.full([w.shape[0]], float('inf'), dtype=w.dtype)
    scale = (xmax / maxq).clamp(min=1e-5)
    for i in range(80):
        p = 1 - i / 100
        s1 = (p * xmax / maxq).clamp(min=1e-5)
        q = torch.clamp(torch.round(w / s1[:, None]), -(maxq + 1), maxq) * s1[:, None]
        err = (q - w).abs().pow(2.4).sum(1)
        better = err < best
        best[better] = err[better]
        scale[better] = s1[better]
    return scale


def quant(x, scale, maxq):
    return torch.clamp(torch.round(x / scale), -(maxq + 1), maxq) * scale


# Seconds of the per-layer work (the n³ factorization behind the GPTQ tail / SparseGPT), which does
# not grow with the rows: the benchmark scales only the rest when it runs a subset of rows.
LAYER_SECONDS = [0.0]
DEVICE = ['cpu']


def sync():
    """Waits for the GPU's queued work, so that wall-clock times cover it (no-op on the CPU)."""
    if DEVICE[0] != 'cpu':
        torch.cuda.synchronize()


def obr(W, H, act, method, alpha, damp, bits, blocksize=128):
    rows, n = W.shape
    maxq = 2 ** (bits - 1) - 1
    scale = find_scales(W, bits)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    # Wanda mask: prune the floor(n/2) lowest |W|*sqrt(act) per row (stable sort).
    metric = W.abs() * torch.sqrt(act)[None, :]
    idx = torch.sort(metric, dim=1, stable=True)[1][:, : int(n * 0.5)]
    mask = torch.ones_like(W, dtype=torch.bool)
    mask.scatter_(1, idx, False)
    k = int(alpha * n)
    Wc = W * mask
    for i in range(rows):
        m = mask[i]
        R = torch.nonzero(m).squeeze(1)
        E = torch.nonzero(~m).squeeze(1)
        if R.numel() == 0 or E.numel() == 0:
            continue
        HRR = H[R][:, R]
        HRE = H[R][:, E]
        L = torch.linalg.cholesky(HRR)
        d1 = torch.cholesky_solve((HRE @ W[i, E]).unsqueeze(1), L).squeeze(1)
        wbar = W[i, R] + d1
        ehat = wbar - quant(wbar, scale[i], maxq)
        p = int(torch.searchsorted(R, k))
        if 0 < p < R.numel():
            L2 = torch.linalg.cholesky(HRR[p:, p:])
            d2 = torch.cholesky_solve((HRR[p:, :p] @ ehat[:p]).unsqueeze(1), L2).squeeze(1)
            wbar[p:] += d2
        Wc[i, R] = wbar
    if method == 'obr-rtn':
        return quant(Wc, scale[:, None], maxq)
    Q = Wc.clone()
    Q[:, :k] = quant(Wc[:, :k], scale[:, None], maxq)
    sync()
    t_layer = time.perf_counter()
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    U = torch.linalg.cholesky(Hinv, upper=True)
    sync()
    LAYER_SECONDS[0] += time.perf_counter() - t_layer
    Wt = Wc.clone()
    for i1 in range(k, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = Wt[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            w = W1[:, j]
            q = quant(w, scale, maxq) * mask[:, i1 + j]
            Q1[:, j] = q
            err = (w - q) / U1[j, j]
            W1[:, j:] -= err.unsqueeze(1) @ U1[j, j:].unsqueeze(0)
            Err1[:, j] = err
        Q[:, i1:i2] = Q1
        Wt[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q


def sparsegpt_gptq(W, H, damp, bits, sparsity=0.5, blocksize=128):
    rows, n = W.shape
    maxq = 2 ** (bits - 1) - 1
    scale = find_scales(W, bits)[:, None]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    sync()
    t_layer = time.perf_counter()
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    sync()
    LAYER_SECONDS[0] += time.perf_counter() - t_layer
    Q = torch.zeros_like(W)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
        mask1 = tmp <= thresh
        for j in range(count):
            w = W1[:, j]
            d = Hinv1[j, j]
            q = w.clone()
            q[mask1[:, j]] = 0
            q = quant(q, scale[:, 0], maxq) * (~mask1[:, j])
            Q1[:, j] = q
            err1 = (w - q) / d
            W1[:, j:] -= err1.unsqueeze(1).matmul(Hinv1[j, j:].unsqueeze(0))
            Err1[:, j] = err1
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('layer_dir')
    ap.add_argument('--method', default='obr-gptq', choices=['obr-gptq', 'obr-rtn', 'sparsegpt-gptq'])
    ap.add_argument('--alpha', type=float, default=0.5)
    ap.add_argument('--damp', type=float, default=0.01)
    ap.add_argument('--wbits', type=int, default=4)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--rows', type=int, default=0, help='only the first N rows (lighter runs)')
    ap.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    DEVICE[0] = args.device
    if args.device != 'cpu':
        torch.set_default_device(args.device)  # the algorithm's torch.zeros/eye/full follow
    torch.backends.cuda.matmul.allow_tf32 = False
    W64 = np.load(os.path.join(args.layer_dir, 'W.npy')).astype(np.float64)
    H64 = np.load(os.path.join(args.layer_dir, 'H.npy')).astype(np.float64)
    act = np.load(os.path.join(args.layer_dir, 'act.npy')).astype(np.float32)
    if args.rows:
        W64 = W64[: args.rows]
    W = torch.from_numpy(W64.astype(np.float32)).to(args.device)
    H = torch.from_numpy(H64.astype(np.float32)).to(args.device)
    sync()
    t0 = time.perf_counter()
    if args.method == 'sparsegpt-gptq':
        Q = sparsegpt_gptq(W.clone(), H.clone(), args.damp, args.wbits)
    else:
        Q = obr(W.clone(), H.clone(), torch.from_numpy(act).to(args.device), args.method, args.alpha, args.damp, args.wbits)
    sync()
    seconds = time.perf_counter() - t0
    Qn = Q.cpu().numpy().astype(np.float32)
    np.save(os.path.join(args.layer_dir, f'Q_torch_{args.method}.npy'), Qn)
    D = Qn.astype(np.float64) - W64
    loss = float(np.einsum('ij,ij->', D @ H64, D))
    print(json.dumps({'method': args.method, 'rows': int(W64.shape[0]), 'cols': int(W64.shape[1]),
                      'seconds': seconds, 'layer_seconds': LAYER_SECONDS[0], 'loss': loss, 'threads': args.threads,
                      'device': args.device, 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
