#!/usr/bin/env python3
"""Python reference for the GMSA GPU benchmark: PyTorch + Hugging Face transformers.

Subcommands (see scripts/bench/README.md):
  ae-step   one autoencoder training step (encoder+LoRA, group merging, LSA, frozen decoder, AdamW)
  generate  model.generate latency: time to first token and ms per new token
  serve     answers/s for a batch of long prompts vs the same prompts compressed by the encoder
  check     correctness checks on a tiny config (LoRA, pooling, packing, loss, FLOP count)
  flops     print the FLOP count of docs/flops.md (needs only torch importable, no GPU)

Weights are random (LLaMA-2-7B shape); only speed and memory are measured.
transformers is imported lazily so the pure-torch pieces can be checked without it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

# "Restate the aforementioned Text." with the LLaMA-2 tokenizer, no BOS (9 tokens).
RESTATE_PROMPT_IDS = [11654, 403, 278, 263, 1454, 882, 28487, 3992, 29889]
EOS_ID = 2
FIRST_ORDINARY_ID = 3  # ids 0..2 are unk/bos/eos in LLaMA-2


# --------------------------------------------------------------------------- shapes


@dataclasses.dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    encoder_layers: int
    lora_r: int
    lora_alpha: float
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA2_7B = Shape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000,
                  encoder_layers=8, lora_r=128, lora_alpha=32, max_positions=4096)
# Same alpha/r ratio (0.25) as the real run; vocab kept so the prompt ids stay valid.
TINY = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=4, vocab=32000,
             encoder_layers=1, lora_r=8, lora_alpha=2, max_positions=4096)
LORA_DROPOUT = 0.05


# --------------------------------------------------------------------------- FLOP count
# Conventions and derivation: docs/flops.md. A multiply-add counts 2 FLOPs; only matmuls
# (linear layers, LM head, attention scores and values) are counted; attention is counted
# in full (no causal halving), like Megatron/PaLM and torch.utils.flop_counter.


def linear_shapes(s: Shape) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer of one decoder layer."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {"q": (s.hidden, q), "k": (s.hidden, kv), "v": (s.hidden, kv), "o": (q, s.hidden),
            "gate": (s.hidden, s.intermediate), "up": (s.hidden, s.intermediate),
            "down": (s.intermediate, s.hidden)}


def layer_params(s: Shape, names=None) -> int:
    return sum(i * o for n, (i, o) in linear_shapes(s).items() if names is None or n in names)


def lora_params(s: Shape, names=None) -> int:
    return sum(s.lora_r * (i + o) for n, (i, o) in linear_shapes(s).items()
               if names is None or n in names)


def attn_fwd(s: Shape, t: int) -> int:
    """Scores QK^T plus values PV of one layer, one sequence of t tokens, full (non-causal) count."""
    return 4 * t * t * s.heads * s.head_dim


def first_layer_qkv_dx(s: Shape, n: int, lora: bool) -> int:
    """Input gradients of layer 0's q/k/v that autograd skips when that layer's input needs no grad."""
    qkv = ("q", "k", "v")
    skipped = layer_params(s, qkv) + (s.hidden * s.lora_r * 3 if lora else 0)
    return 2 * n * skipped


def ae_step_flops(s: Shape, context: int, soft: list[int], prompt: int) -> dict[str, int]:
    """FLOPs of one autoencoder step; soft[i] = soft tokens of sample i (context tokens each)."""
    w, wl, E, N = layer_params(s), lora_params(s), s.encoder_layers, s.layers
    head = s.hidden * s.vocab
    f = dict.fromkeys(["encoder_fwd", "encoder_bwd", "lsa_fwd", "lsa_bwd", "decoder_fwd",
                       "decoder_bwd"], 0)
    for m in soft:
        L, T = context, m + prompt + context + 1  # decoder: soft + prompt + context + EOS
        enc_lin, enc_att = 2 * L * E * (w + wl), E * attn_fwd(s, L)
        f["encoder_fwd"] += enc_lin + enc_att
        # input grads = 1x linear fwd (minus layer 0 q/k/v), LoRA weight grads, attention 2x
        f["encoder_bwd"] += (enc_lin - first_layer_qkv_dx(s, L, lora=True)
                             + 2 * L * E * wl + 2 * enc_att)
        lsa = 2 * m * w + attn_fwd(s, m)
        f["lsa_fwd"] += lsa
        f["lsa_bwd"] += 2 * lsa  # input grads + full weight grads; attention 2x
        dec_lin, dec_att = 2 * T * (N * w + head), N * attn_fwd(s, T)
        f["decoder_fwd"] += dec_lin + dec_att
        f["decoder_bwd"] += dec_lin + 2 * dec_att  # input grads only (frozen)
    f["total"] = sum(f.values())
    return f


def keft_step_flops(s: Shape, context: int, soft: list[int], question: int,
                    answer: int) -> dict[str, int]:
    """FLOPs of one KEFT step: frozen compressor forward, decoder trains q/k/v weights."""
    w, wl, E, N = layer_params(s), lora_params(s), s.encoder_layers, s.layers
    qkv = layer_params(s, ("q", "k", "v"))
    head = s.hidden * s.vocab
    f = dict.fromkeys(["encoder_fwd", "lsa_fwd", "decoder_fwd", "decoder_bwd"], 0)
    for m in soft:
        L, T = context, m + question + answer
        f["encoder_fwd"] += 2 * L * E * (w + wl) + E * attn_fwd(s, L)
        f["lsa_fwd"] += 2 * m * w + attn_fwd(s, m)
        dec_lin, dec_att = 2 * T * (N * w + head), N * attn_fwd(s, T)
        f["decoder_fwd"] += dec_lin + dec_att
        f["decoder_bwd"] += (dec_lin - first_layer_qkv_dx(s, T, lora=False)
                             + 2 * T * N * qkv + 2 * dec_att)
    f["total"] = sum(f.values())
    return f


# --------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """y = base(x) + B(A(dropout(x))) * alpha/r, the adapter applied only while `enabled`.

    The base layer stays shared with the decoder, which runs with the adapter off.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base = base
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **kw)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **kw)
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / r
        self.enabled = False
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as nn.Linear / peft
        nn.init.zeros_(self.lora_B.weight)

    @property
    def weight(self) -> torch.Tensor:  # for code that inspects proj.weight (dtype, device)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.enabled:
            y = y + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling
        return y


LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def add_lora(layers, r: int, alpha: float, dropout: float) -> list[LoRALinear]:
    wrapped = []
    for layer in layers:
        for path in LORA_TARGETS:
            parent_name, attr = path.split(".")
            parent = getattr(layer, parent_name)
            lora = LoRALinear(getattr(parent, attr), r, alpha, dropout)
            setattr(parent, attr, lora)
            wrapped.append(lora)
    return wrapped


class lora_on:
    """Context manager: adapters enabled inside (encoder), disabled outside (decoder)."""

    def __init__(self, modules: list[LoRALinear]):
        self.modules = modules

    def __enter__(self):
        for m in self.modules:
            m.enabled = True

    def __exit__(self, *exc):
        for m in self.modules:
            m.enabled = False


# --------------------------------------------------------------------------- group merging


def group_merge(hidden: torch.Tensor, rates: list[int]) -> list[torch.Tensor]:
    """Official per-sample loop: mean of each run of r consecutive tokens, last group partial.

    hidden: (B, L, d), all samples L tokens long. Returns B tensors of (ceil(L/r), d).
    """
    out = []
    for i, r in enumerate(rates):
        h = hidden[i]
        full = (h.shape[0] // r) * r
        pooled = [h[:full].reshape(-1, r, h.shape[-1]).mean(dim=1)]
        if full < h.shape[0]:
            pooled.append(h[full:].mean(dim=0, keepdim=True))
        out.append(torch.cat(pooled, dim=0))
    return out


def right_pad(rows: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    """Stack (t_i, ...) rows into (B, max t, ...), padding at the end of each row."""
    t = max(r.shape[0] for r in rows)
    return torch.stack([F.pad(r, (0, 0) * (r.dim() - 1) + (0, t - r.shape[0]), value=value)
                        for r in rows])


# --------------------------------------------------------------------------- model


def build_model(s: Shape, device: torch.device, dtype: torch.dtype, seed: int):
    """LlamaForCausalLM with random N(0, 0.02) weights created directly on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                      num_hidden_layers=s.layers, num_attention_heads=s.heads,
                      num_key_value_heads=s.kv_heads, max_position_embeddings=s.max_positions,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=EOS_ID)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # no fp32 copy first; RoPE's inv_freq is built in fp32 anyway
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    with torch.no_grad():  # explicit: whether the constructor initialises differs by version
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.weight.normal_(0.0, 0.02)
            elif type(mod).__name__.endswith("RMSNorm"):
                mod.weight.fill_(1.0)
    wrong = {str(p.dtype) for p in model.parameters() if p.dtype != dtype}
    if wrong:
        raise RuntimeError(f"parameters built as {wrong}, expected {dtype}")
    model.requires_grad_(False)
    return model


def run_layers(model, layers, hidden: torch.Tensor) -> torch.Tensor:
    """Run decoder layers causally over positions 0..T-1 without a mask (SDPA is_causal path)."""
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    pe = model.model.rotary_emb(hidden, pos)
    for layer in layers:
        out = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=pe)
        hidden = out[0] if isinstance(out, tuple) else out  # tuple in transformers 4.x
    return hidden


class Gmsa:
    """One LLM in memory: the encoder is its first layers with LoRA on, the decoder the whole
    model with LoRA off, plus the LSA layer (copy of layer 0) followed by the frozen final norm."""

    def __init__(self, model, s: Shape, lora_dropout: float = LORA_DROPOUT):
        self.model, self.shape = model, s
        self.lsa = copy.deepcopy(model.model.layers[0])  # before LoRA: a plain decoder layer
        self.lsa.requires_grad_(True)
        self.lora = add_lora(model.model.layers[:s.encoder_layers], s.lora_r, s.lora_alpha,
                             lora_dropout)
        for m in self.lora:
            m.lora_A.weight.requires_grad_(True)
            m.lora_B.weight.requires_grad_(True)

    def trained_parameters(self) -> list[nn.Parameter]:
        lora = [p for m in self.lora for p in (m.lora_A.weight, m.lora_B.weight)]
        return lora + list(self.lsa.parameters())

    def train(self, mode: bool = True):
        self.model.train(mode)
        self.lsa.train(mode)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.model.embed_tokens(ids)

    def encode(self, context: torch.Tensor) -> torch.Tensor:
        """(B, L) ids without BOS -> (B, L, d): encoder layers with LoRA, then the final norm."""
        with lora_on(self.lora):
            h = run_layers(self.model, self.model.model.layers[:self.shape.encoder_layers],
                           self.embed(context))
        return self.model.model.norm(h)

    def compress(self, context: torch.Tensor, rates: list[int]) -> list[torch.Tensor]:
        """Encoder, group merging, LSA + final norm. Returns per-sample (m_i, d) soft tokens."""
        pooled = group_merge(self.encode(context), rates)
        # Right padding: with a causal mask, real positions never see the pads after them.
        h = self.model.model.norm(run_layers(self.model, [self.lsa], right_pad(pooled)))
        return [h[i, :p.shape[0]] for i, p in enumerate(pooled)]

    def ae_inputs(self, soft: list[torch.Tensor], context: torch.Tensor,
                  prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder rows [soft][prompt][context, EOS], right-padded; labels -100 except targets."""
        eos = torch.full((1,), EOS_ID, dtype=context.dtype, device=context.device)
        prompt_emb = self.embed(prompt)
        rows, labels = [], []
        for i, s in enumerate(soft):
            target = torch.cat([context[i], eos])
            rows.append(torch.cat([s, prompt_emb, self.embed(target)]))
            ignore = torch.full((s.shape[0] + prompt.shape[0],), -100, dtype=target.dtype,
                                device=target.device)
            labels.append(torch.cat([ignore, target]))
        return right_pad(rows), right_pad(labels, -100)

    def ae_loss(self, context: torch.Tensor, rates: list[int], prompt: torch.Tensor,
                pad_mask: bool = False) -> tuple[torch.Tensor, list[int]]:
        soft = self.compress(context, rates)
        embeds, labels = self.ae_inputs(soft, context, prompt)
        mask = None
        if pad_mask:  # changes nothing for real tokens (right padding + causal), but makes
            # SDPA leave its fused causal kernel; off by default, on as a collator would do
            lengths = torch.tensor([x.shape[0] + prompt.shape[0] + context.shape[1] + 1
                                    for x in soft], device=labels.device)
            mask = (torch.arange(labels.shape[1], device=labels.device) < lengths[:, None]).long()
        out = self.model(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False)
        return out.loss, [x.shape[0] for x in soft]


# --------------------------------------------------------------------------- timing


class Timer:
    """Wall time of a region in ms: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = torch.cuda.Event(True), torch.cuda.Event(True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.end.record()
            torch.cuda.synchronize()
            self.ms = self.start.elapsed_time(self.end)
        else:
            self.ms = (time.perf_counter() - self.t0) * 1e3


def environment(device: torch.device) -> dict:
    import transformers
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def plain_args(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "fn"}


def summary(samples: list[float]) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": samples}


def report(title: str, rows: list[tuple[str, str]], result: dict, path: str | None):
    print(f"== {title}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"  (json: {path})")


def setup(args) -> tuple[Shape, torch.device, torch.dtype]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    import transformers
    transformers.logging.set_verbosity_error()
    return (TINY if args.tiny else LLAMA2_7B), device, dtype


def random_ids(gen: torch.Generator, s: Shape, *size: int, device) -> torch.Tensor:
    return torch.randint(FIRST_ORDINARY_ID, s.vocab, size, generator=gen).to(device)


# --------------------------------------------------------------------------- ae-step


def step_rates(mode: str, rates: list[int], batch: int, step: int, rng: random.Random):
    """cycle: sample j of step t gets rates[(t*B + j) % n] (steps equal when n divides B);
    random: independent uniform draws per sample, as in training."""
    if mode == "random":
        return [rng.choice(rates) for _ in range(batch)]
    return [rates[(step * batch + j) % len(rates)] for j in range(batch)]


def cmd_ae_step(args):
    s, device, dtype = setup(args)
    model = build_model(s, device, dtype, args.seed)
    g = Gmsa(model, s)
    g.train()
    opt = torch.optim.AdamW(g.trained_parameters(), lr=args.lr)
    gen, rng = torch.Generator().manual_seed(args.seed), random.Random(args.seed)
    prompt = torch.tensor(RESTATE_PROMPT_IDS, device=device)
    rates = [int(r) for r in args.rates.split(",")]
    ms, flops, losses = [], [], []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        context = random_ids(gen, s, args.batch, args.context, device=device)
        r = step_rates(args.rate_mode, rates, args.batch, step, rng)
        with Timer(device) as t:
            loss, soft = g.ae_loss(context, r, prompt, args.pad_mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            ms.append(t.ms)
            flops.append(ae_step_flops(s, args.context, soft, len(RESTATE_PROMPT_IDS))["total"])
            losses.append(loss.item())
    tok_s = [args.batch * args.context / (m / 1e3) for m in ms]
    mfu = [f / (m / 1e3) / (args.peak_tflops * 1e12) for f, m in zip(flops, ms)]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    n_trained = sum(p.numel() for p in g.trained_parameters())
    result = {"benchmark": "ae-step", "env": environment(device), "shape": dataclasses.asdict(s),
              "args": plain_args(args), "dtype": str(dtype), "trained_params": n_trained,
              "attn_implementation": model.config._attn_implementation,
              "ms_per_step": summary(ms), "context_tokens_per_s": summary(tok_s),
              "flops_per_step": flops, "mfu": summary(mfu),
              "mfu_aggregate": sum(flops) / (sum(ms) / 1e3) / (args.peak_tflops * 1e12),
              "peak_memory_bytes": peak, "loss": losses}
    report(f"ae-step context {args.context} batch {args.batch} rates {args.rates}", [
        ("device", result["env"].get("device_name", str(device))),
        ("ms/step (median)", f"{statistics.median(ms):.1f}  [{min(ms):.1f} .. {max(ms):.1f}]"),
        ("context tokens/s", f"{statistics.median(tok_s):,.0f}"),
        ("TFLOP/step", f"{statistics.median(flops) / 1e12:.2f}"),
        ("MFU", f"{100 * statistics.median(mfu):.1f}% of {args.peak_tflops:g} TFLOP/s"),
        ("peak memory", f"{peak / 1e9:.1f} GB" if peak is not None else "n/a (cpu)"),
        ("loss (last)", f"{losses[-1]:.3f}")], result, args.json)


# --------------------------------------------------------------------------- generate


def greedy_config(new_tokens: int):
    """Greedy, repetition penalty 1.3; EOS disabled and min_new_tokens set so random weights
    always produce exactly new_tokens tokens."""
    from transformers import GenerationConfig
    return GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.3,
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            eos_token_id=None, pad_token_id=0, bos_token_id=1)


def timed_generate(model, device, repeats: int, new_tokens: int, expect_len: int, **inputs):
    """One warm-up call, then `repeats` timed calls; checks the generated length."""
    model.generation_config.eos_token_id = None
    cfg = greedy_config(new_tokens)
    samples = []
    for i in range(repeats + 1):
        with Timer(device) as t:
            out = model.generate(**inputs, generation_config=cfg)
        if out.shape[1] != expect_len:
            raise RuntimeError(f"generate returned {out.shape[1]} positions, expected {expect_len}")
        if i > 0:
            samples.append(t.ms)
    return samples


def cmd_generate(args):
    s, device, dtype = setup(args)
    model = build_model(s, device, dtype, args.seed).eval()
    gen = torch.Generator().manual_seed(args.seed)
    ids = random_ids(gen, s, args.batch, args.prompt_len, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    prefill = timed_generate(model, device, args.repeats, 1, args.prompt_len + 1, **inputs)
    full = timed_generate(model, device, args.repeats, args.new_tokens,
                          args.prompt_len + args.new_tokens, **inputs)
    ttft, total = statistics.median(prefill), statistics.median(full)
    per_token = (total - ttft) / (args.new_tokens - 1)
    result = {"benchmark": "generate", "env": environment(device), "shape": dataclasses.asdict(s),
              "args": plain_args(args), "dtype": str(dtype), "ttft_ms": summary(prefill),
              "total_ms": summary(full), "decode_ms_per_token": per_token,
              "decode_tokens_per_s": args.batch * 1e3 / per_token}
    report(f"generate prompt {args.prompt_len} batch {args.batch} new {args.new_tokens}", [
        ("device", result["env"].get("device_name", str(device))),
        ("time to first token", f"{ttft:.1f} ms"),
        ("total", f"{total:.1f} ms"),
        ("decode ms/new token", f"{per_token:.2f} ms"),
        ("decode tokens/s", f"{result['decode_tokens_per_s']:.1f}")], result, args.json)


# --------------------------------------------------------------------------- serve


def cmd_serve(args):
    s, device, dtype = setup(args)
    model = build_model(s, device, dtype, args.seed)
    g = Gmsa(model, s)
    g.train(False)
    gen = torch.Generator().manual_seed(args.seed)
    context = random_ids(gen, s, args.batch, args.prompt_len, device=device)
    question = random_ids(gen, s, args.batch, args.question_len, device=device)
    ids = torch.cat([context, question], dim=1)
    original = timed_generate(model, device, args.repeats, args.new_tokens,
                              ids.shape[1] + args.new_tokens,
                              input_ids=ids, attention_mask=torch.ones_like(ids))

    def compressed_answer():
        with torch.no_grad():
            soft = torch.stack(g.compress(context, [args.rate] * args.batch))
            embeds = torch.cat([soft, g.embed(question)], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        out = model.generate(inputs_embeds=embeds, attention_mask=mask,
                             generation_config=greedy_config(args.new_tokens))
        if out.shape[1] != args.new_tokens:  # with inputs_embeds only new tokens come back
            raise RuntimeError(f"generate returned {out.shape[1]} tokens, expected "
                               f"{args.new_tokens}")

    model.generation_config.eos_token_id = None
    compressed, compress_only = [], []
    for i in range(args.repeats + 1):
        with Timer(device) as t:
            compressed_answer()
        with Timer(device) as tc, torch.no_grad():
            g.compress(context, [args.rate] * args.batch)
        if i > 0:
            compressed.append(t.ms)
            compress_only.append(tc.ms)
    a_orig = args.batch / (statistics.median(original) / 1e3)
    a_comp = args.batch / (statistics.median(compressed) / 1e3)
    soft_len = math.ceil(args.prompt_len / args.rate)
    result = {"benchmark": "serve", "env": environment(device), "shape": dataclasses.asdict(s),
              "args": plain_args(args), "dtype": str(dtype),
              "original_prompt_tokens": ids.shape[1],
              "compressed_prompt_tokens": soft_len + args.question_len,
              "original_ms": summary(original), "compressed_ms": summary(compressed),
              "compression_only_ms": summary(compress_only),
              "answers_per_s_original": a_orig, "answers_per_s_compressed": a_comp,
              "speedup": a_comp / a_orig}
    report(f"serve batch {args.batch} context {args.prompt_len} rate {args.rate} "
           f"new {args.new_tokens}", [
        ("device", result["env"].get("device_name", str(device))),
        ("original", f"{ids.shape[1]} tokens: {statistics.median(original):.0f} ms, "
                     f"{a_orig:.2f} answers/s"),
        ("compressed", f"{soft_len}+{args.question_len} tokens: "
                       f"{statistics.median(compressed):.0f} ms incl. compression "
                       f"{statistics.median(compress_only):.0f} ms, {a_comp:.2f} answers/s"),
        ("speedup", f"{a_comp / a_orig:.2f}x")], result, args.json)


# --------------------------------------------------------------------------- check


def merged_reference(pristine, s: Shape, lora: list[LoRALinear]):
    """The encoder as plain HF: a copy of the model before LoRA, cut to the encoder layers,
    with W + (alpha/r) B A folded into each adapted weight."""
    ref = copy.deepcopy(pristine)
    ref.model.layers = ref.model.layers[:s.encoder_layers]
    ref.config.num_hidden_layers = s.encoder_layers
    adapters = iter(lora)  # same order as add_lora
    with torch.no_grad():
        for layer in ref.model.layers:
            for path in LORA_TARGETS:
                parent_name, attr = path.split(".")
                a = next(adapters)
                getattr(getattr(layer, parent_name), attr).weight += (
                    a.scaling * a.lora_B.weight @ a.lora_A.weight)
    return ref


def check_pooling():
    h = torch.randn(3, 11, 5)
    rates = [4, 8, 11]
    got = group_merge(h, rates)
    for i, r in enumerate(rates):
        # independent formula: group g covers tokens [g*r, min((g+1)*r, L)), via prefix sums
        c = torch.cat([torch.zeros(1, 5), h[i].cumsum(0)])
        m = math.ceil(11 / r)
        ends = [min((k + 1) * r, 11) for k in range(m)]
        want = torch.stack([(c[e] - c[k * r]) / (e - k * r) for k, e in enumerate(ends)])
        assert got[i].shape == (m, 5), got[i].shape
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    print("  pooling: per-sample loop matches prefix-sum means (r=4,8,11 over 11 tokens)")


def check_encoder(g: Gmsa, pristine, s: Shape, device):
    for m in g.lora:  # non-zero B so the adapter actually changes the output
        nn.init.normal_(m.lora_B.weight, std=0.02)
    g.train(False)
    ctx = torch.randint(FIRST_ORDINARY_ID, s.vocab, (2, 13), device=device)
    with torch.no_grad():
        ref = merged_reference(pristine, s, g.lora)
        want = ref.model(input_ids=ctx, use_cache=False).last_hidden_state
        torch.testing.assert_close(g.encode(ctx), want, rtol=1e-4, atol=1e-4)
        # the decoder runs with the adapters off: same logits as the model before LoRA
        torch.testing.assert_close(g.model(input_ids=ctx, use_cache=False).logits,
                                   pristine(input_ids=ctx, use_cache=False).logits,
                                   rtol=1e-4, atol=1e-4)
    print("  encoder: LoRA output = HF model cut to the encoder layers with W+sBA merged;"
          " decoder ignores LoRA")


def check_loss(g: Gmsa, s: Shape, device, prompt):
    g.train(False)
    ctx = torch.randint(FIRST_ORDINARY_ID, s.vocab, (3, 10), device=device)
    rates = [4, 8, 4]
    with torch.no_grad():
        loss, soft_lens = g.ae_loss(ctx, rates, prompt)
        masked, _ = g.ae_loss(ctx, rates, prompt, pad_mask=True)
        soft = g.compress(ctx, rates)
        total, count = 0.0, 0
        for i, sf in enumerate(soft):  # each row alone, unpadded, loss by hand
            target = torch.cat([ctx[i], torch.tensor([EOS_ID], device=device)])
            row = torch.cat([sf, g.embed(prompt), g.embed(target)]).unsqueeze(0)
            logits = g.model(inputs_embeds=row).logits[0].float()
            start = sf.shape[0] + prompt.shape[0]  # first target predicted from position start-1
            pred = logits[start - 1:start - 1 + target.shape[0]]
            total += F.cross_entropy(pred, target, reduction="sum").item()
            count += target.shape[0]
    assert soft_lens == [3, 2, 3], soft_lens
    assert abs(loss.item() - total / count) < 1e-4, (loss.item(), total / count)
    assert abs(masked.item() - loss.item()) < 1e-4, (masked.item(), loss.item())
    print(f"  loss: padded batch {loss.item():.5f} = per-row by hand {total / count:.5f} "
          f"= with pad mask {masked.item():.5f}")


def check_step(g: Gmsa, s: Shape, device, prompt):
    g.train()
    frozen = {n: p.detach().clone() for n, p in g.model.named_parameters()
              if "lora_" not in n}
    trained = [p.detach().clone() for p in g.trained_parameters()]
    opt = torch.optim.AdamW(g.trained_parameters(), lr=1e-3)
    loss, _ = g.ae_loss(torch.randint(FIRST_ORDINARY_ID, s.vocab, (2, 9), device=device),
                        [4, 8], prompt)
    loss.backward()
    assert all(p.grad is None for n, p in g.model.named_parameters() if "lora_" not in n)
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(trained, g.trained_parameters()))
    assert changed == len(trained), f"only {changed}/{len(trained)} trained tensors moved"
    for n, p in g.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(frozen[n], p), n
    print(f"  step: all {len(trained)} LoRA/LSA tensors updated, base weights untouched")


def check_flops(g: Gmsa, s: Shape, device, prompt):
    """Analytic count vs torch.utils.flop_counter on a step without padding (one rate)."""
    from torch.utils.flop_counter import FlopCounterMode
    g.train()
    ctx_len, batch, rate = 24, 2, 4
    ctx = torch.randint(FIRST_ORDINARY_ID, s.vocab, (batch, ctx_len), device=device)
    with FlopCounterMode(display=False) as fc:
        loss, soft = g.ae_loss(ctx, [rate] * batch, prompt)
        loss.backward()
    counts = fc.get_flop_counts()["Global"]
    name = lambda op: str(op).split(".")[-1]
    mm = sum(v for op, v in counts.items() if name(op) in ("mm", "addmm"))
    attn = {name(op): v for op, v in counts.items() if "attention" in name(op)}
    want = ae_step_flops(s, ctx_len, soft, prompt.shape[0])
    T = [m + prompt.shape[0] + ctx_len + 1 for m in soft]
    att_fwd = sum(s.encoder_layers * attn_fwd(s, ctx_len) + attn_fwd(s, m) +
                  s.layers * attn_fwd(s, t) for m, t in zip(soft, T))
    att_total = att_fwd * 3
    assert mm == want["total"] - att_total, f"torch {mm:,} vs formula {want['total'] - att_total:,}"
    print(f"  flops: matmuls {mm:,} = docs/flops.md formula (attention excluded)")
    fwd = sum(v for k, v in attn.items() if "backward" not in k)
    if fwd:
        assert fwd == att_fwd, (fwd, att_fwd)
        print(f"  flops: SDPA forward {fwd:,} = formula; SDPA backward counted by torch "
              f"{sum(attn.values()) - fwd:,} vs ours {2 * att_fwd:,} (conventions may differ)")
    else:
        print(f"  flops: torch reported no SDPA count here ({sorted(counts, key=str)})")


def cmd_check(args):
    args.tiny = True
    s, device, _ = setup(args)
    torch.manual_seed(0)
    print(f"== check (tiny config, fp32, {device})")
    check_pooling()
    prompt = torch.tensor(RESTATE_PROMPT_IDS, device=device)
    model = build_model(s, device, torch.float32, seed=0)
    pristine = copy.deepcopy(model)
    g = Gmsa(model, s, lora_dropout=0.0)
    check_encoder(g, pristine, s, device)
    check_loss(g, s, device, prompt)
    check_step(g, s, device, prompt)
    check_flops(g, s, device, prompt)
    print("all checks passed")


# --------------------------------------------------------------------------- flops


def cmd_flops(args):
    s = TINY if args.tiny else LLAMA2_7B
    rates = [int(r) for r in args.rates.split(",")]
    soft = [math.ceil(args.context / r) for r in step_rates("cycle", rates, args.batch, 0, None)]
    p = len(RESTATE_PROMPT_IDS)
    ae = ae_step_flops(s, args.context, soft, p)
    keft = keft_step_flops(s, args.context, soft, args.question_len, args.answer_len)
    print(f"== flops context {args.context} batch {args.batch} soft {soft} prompt {p}")
    print(f"  per layer: linear {layer_params(s):,}  LoRA {lora_params(s):,}  "
          f"LM head {s.hidden * s.vocab:,}")
    for title, f in (("ae-step", ae), (f"keft (question {args.question_len}, answer "
                                       f"{args.answer_len})", keft)):
        print(f"  {title}:")
        for k, v in f.items():
            print(f"    {k:<12} {v / 1e12:9.3f} TFLOP")
        print(f"    at {args.peak_tflops:g} TFLOP/s and 100% MFU: "
              f"{f['total'] / (args.peak_tflops * 1e12) * 1e3:.1f} ms")


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, json_opt=True):
        p.add_argument("--tiny", action="store_true", help="2-layer 64-hidden smoke-test config")
        p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
        p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
        p.add_argument("--seed", type=int, default=0)
        if json_opt:
            p.add_argument("--json", default=None, help="write the result here")

    p = sub.add_parser("ae-step", help="autoencoder training step")
    common(p)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rates", default="4,8")
    p.add_argument("--rate-mode", choices=["cycle", "random"], default="cycle")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--pad-mask", action="store_true", help="pass the 2-D padding mask")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM dense bf16")
    p.set_defaults(fn=cmd_ae_step)

    p = sub.add_parser("generate", help="generation latency")
    common(p)
    p.add_argument("--prompt-len", type=int, default=3000)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("serve", help="answers/s, original vs compressed prompt")
    common(p)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=3000)
    p.add_argument("--question-len", type=int, default=30)
    p.add_argument("--rate", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("check", help="correctness checks on the tiny config")
    p.add_argument("--device", default=None)
    p.set_defaults(fn=cmd_check, dtype="fp32", tiny=True)

    p = sub.add_parser("flops", help="print the FLOP count of docs/flops.md")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rates", default="4,8")
    p.add_argument("--question-len", type=int, default=30)
    p.add_argument("--answer-len", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.set_defaults(fn=cmd_flops)

    args = ap.parse_args(argv)
    if getattr(args, "new_tokens", 2) < 2:
        ap.error("--new-tokens must be at least 2 (decode time = total - first token)")
    args.fn(args)


if __name__ == "__main__":
    main()
