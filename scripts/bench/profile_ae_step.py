"""Where the GPU time of an autoencoder step goes, by kernel family.

Runs the Python reference's autoencoder step (reference_gmsa.py: same shapes, LoRA, group
merging, LSA, loss) under torch.profiler and sums CUDA kernel time into GEMM, attention,
optimizer and "other" (elementwise and reductions: RMSNorm, RoPE, SwiGLU, casts, loss). It
answers whether fusing the elementwise chains can pay for the training step
(docs/performance.md). Usage:
  python3 scripts/bench/profile_ae_step.py --context 512 --batch 4 [--rates 4,8] [--steps 2]
"""
import argparse
import collections
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_gmsa as ref  # noqa: E402


def family(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("flash", "fmha", "attention", "attn")):
        return "attention"
    if any(k in n for k in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "gemv", "splitk")):
        return "gemm"
    if any(k in n for k in ("adam", "multi_tensor", "foreach")):
        return "optimizer"
    return "other"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rates", default="4,8")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    device = torch.device("cuda")
    s = ref.LLAMA2_7B
    model = ref.build_model(s, device, torch.bfloat16, 0)
    g = ref.Gmsa(model, s)
    g.train()
    opt = torch.optim.AdamW(g.trained_parameters(), lr=1e-4)
    gen, rng = torch.Generator().manual_seed(0), random.Random(0)
    prompt = torch.tensor(ref.RESTATE_PROMPT_IDS, device=device)
    rates = [int(r) for r in args.rates.split(",")]

    def step(i):
        context = ref.random_ids(gen, s, args.batch, args.context, device=device)
        loss, _ = g.ae_loss(context, ref.step_rates("cycle", rates, args.batch, i, rng), prompt, False)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for i in range(args.steps):
            step(3 + i)
        torch.cuda.synchronize()
    per_family, per_kernel, count = collections.Counter(), collections.Counter(), collections.Counter()
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.device_time if hasattr(e, "device_time") else e.cuda_time
        per_family[family(e.name)] += us
        per_kernel[e.name] += us
        count[e.name] += 1
    total = sum(per_family.values())
    print(f"ae step, context {args.context} x batch {args.batch}, {args.steps} steps profiled: "
          f"{total / 1e3 / args.steps:.1f} ms of kernels per step")
    for f, us in per_family.most_common():
        print(f"  {f:10s} {us / 1e3 / args.steps:8.1f} ms/step  {100 * us / total:5.1f}%")
    print(f"top {args.top} kernels (ms/step, launches/step):")
    for name, us in per_kernel.most_common(args.top):
        print(f"  {us / 1e3 / args.steps:7.2f}  {count[name] // args.steps:5d}  {family(name):9s}  {name[:110]}")


if __name__ == "__main__":
    main()
