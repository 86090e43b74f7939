"""Batch-1 (and batch-16) GEMVs of the LLaMA-2-7B decoding step through cuBLAS (torch.nn.functional.linear).

How close does cuBLAS come to the copy bandwidth on the decoding step's weight shapes? Each
shape is replayed from a CUDA graph of 32 calls (one per layer) with its own weight per call
(so nothing is served from L2); prints ms per 32 calls and the weight bytes read per second.
Usage: python3 scripts/bench/decode_gemv.py
"""
import torch, torch.nn.functional as F
torch.manual_seed(0)
shapes = {"qkv packed": (12288, 4096), "q/k/v one": (4096, 4096), "o_proj": (4096, 4096),
          "gate_up packed": (22016, 4096), "down": (4096, 11008), "lm_head": (32000, 4096)}
for M in (1, 16):
    for name, (N, K) in shapes.items():
        ws = [torch.randn(N, K, device='cuda', dtype=torch.bfloat16) * 0.02 for _ in range(32 if N < 32000 else 4)]
        x = torch.randn(M, K, device='cuda', dtype=torch.bfloat16)
        fn = lambda: [F.linear(x, w) for w in ws]
        for _ in range(3): fn()
        torch.cuda.synchronize()
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s): fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g): fn()
        g.replay(); torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(True), torch.cuda.Event(True)
        times = []
        for _ in range(7):
            e0.record(); g.replay(); e1.record(); torch.cuda.synchronize()
            times.append(e0.elapsed_time(e1))
        ms = sorted(times)[3]
        gb = len(ws) * N * K * 2 / 1e9
        print(f"M={M} {name} [{N}x{K}] x{len(ws)}: {ms:.3f} ms, {gb / ms:.2f} TB/s, {ms / len(ws) * 1000:.1f} us per call")
        del ws
