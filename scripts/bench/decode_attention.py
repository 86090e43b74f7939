"""Decode-step attention on the GPU: one query per row over a KV cache of fixed capacity.

Times the candidates for GMSA's CUDA-graph decoding step (docs/performance.md): fused SDPA
with a boolean key mask (what DecodeStep runs), the same written out with matmul + softmax,
and SDPA without a mask over exactly the filled keys (a lower bound: no padding columns).
Each is replayed from a CUDA graph of 32 calls (one per layer of the 7B shape).
Usage: python3 scripts/bench/decode_attention.py
"""
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
torch.manual_seed(0)
for B, cap in [(1, 3136), (16, 3136), (16, 800)]:
    q = torch.randn(B, 32, 1, 128, device='cuda', dtype=torch.bfloat16)
    k = torch.randn(B, 32, cap, 128, device='cuda', dtype=torch.bfloat16)
    v = torch.randn_like(k)
    m = torch.zeros(B, 1, 1, cap, dtype=torch.bool, device='cuda'); m[..., :cap-50] = True
    for name, fn in [("sdpa-mask", lambda: F.scaled_dot_product_attention(q, k, v, m)),
                     ("math", lambda: torch.softmax((q @ k.transpose(-1,-2)).float().masked_fill(~m, -1e30)/11.3, -1).to(q.dtype) @ v),
                     ("flash-nomask", lambda: F.scaled_dot_product_attention(q, k[:, :, :cap-50], v[:, :, :cap-50]))]:
        for _ in range(3): fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s): fn()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            for _ in range(32): fn()
        e0, e1 = torch.cuda.Event(True), torch.cuda.Event(True)
        g.replay(); torch.cuda.synchronize()
        e0.record()
        for _ in range(10): g.replay()
        e1.record(); torch.cuda.synchronize()
        ms = e0.elapsed_time(e1) / 10
        gb = 2 * B * 32 * cap * 128 * 2 * 32 / 1e9
        print(f"B={B} cap={cap} {name}: {ms:.3f} ms per 32 layers, {gb/ms:.2f} TB/s")
