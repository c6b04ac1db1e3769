"""LoRA training throughput of a ~0.5 B-parameter VLM on one GPU: tokens/s, peak memory, MFU.

The model is built from a configuration in memory (random weights, nothing downloaded): a
LLaVA whose language model has Qwen2-0.5B's shape (24 layers, hidden 896, 14 query / 2 key-value
heads, MLP 4864, vocabulary 151,936, tied embeddings; 494 M parameters) and whose vision tower
is a small CLIP (6 layers, hidden 512, 224x224 images in 14x14 patches: 256 image tokens per
sample). It is wrapped with fedmllm's LoRA (``--modules``, rank ``--rank``) and trained by the
engine's own :class:`~fedmllm.engine.client.ClientTrainer` (collation, bf16 autocast, AdamW,
gradient clipping), in bf16 weights, on ``--batch`` sequences of ``--seq`` tokens (the 256
image tokens included), for ``--steps`` timed optimizer steps after ``--warmup`` untimed ones.

Model FLOPs per step (the MFU convention of PaLM, Chowdhery et al. 2022, App. B: the work the
model needs, not counting recomputation), with ``T = batch x seq`` tokens, ``S = seq``::

    LM linear layers   4 P_lm T       P_lm = weights of every Linear of the language model and
                                      of the LM head (embedding lookups are free). The base is
                                      frozen, so autograd computes the activation gradients
                                      (dX = dY W^T: 2 P per token) but no weight gradients:
                                      2 P forward + 2 P backward, not the 6 P of full training.
    LoRA               6 P_lora T     forward, activation and weight gradients (it trains;
                                      LoRA in every layer is assumed).
    first layer        -2 P_qkv0 T    its q/k/v projections (and their LoRA A) need no input
                                      gradient: the embeddings below them need none.
    LM attention       12 L S D T     scores and weighted values (4 S D per token per layer
                                      forward, twice that backward; D = heads x head dim; the
                                      causal mask is not subtracted, as in PaLM's count).
    vision + projector 2 P_vis N_v + 4 L_v n_v D_v N_v + 2 P_proj N_img, forward only: no
                                      gradient flows into the frozen tower (pixels need none,
                                      no LoRA there); N_v = patch tokens (+ CLS) of all images.

``MFU = FLOPs / (seconds per step x peak)``, the peak being the device's dense bf16 tensor-core
rate (:data:`PEAK_BF16_TFLOPS`, NVIDIA data sheets, without sparsity; ``--peak-tflops``
overrides). With ``--gradient-checkpointing`` the recomputed forward (2 P_lm T + 4 L S D T)
is reported separately as hardware FLOPs utilisation (HFU), not in the MFU.

Goal: MFU >= 40 % on an H100/H200-class GPU. Without a CUDA device the script says
so and exits 0; ``--smoke`` runs a miniature configuration on the CPU instead (a check of the
code path and of the FLOPs formula against PyTorch's operator count, ``--count-flops``).

    python benchmarks/gpu_step.py [--batch 8] [--seq 2048] [--steps 20] [--rank 16]
        [--modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj]
        [--gradient-checkpointing] [--peak-tflops T] [--smoke] [--count-flops]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

#: Dense bf16 tensor-core peaks in TFLOP/s, matched in order against the CUDA device name
#: (NVIDIA data sheets, the "with sparsity" figures halved; SXM parts unless named).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
)

IMAGE_TOKEN = 151646  # an unused id of Qwen2's vocabulary (the real one is <|image_pad|>-like)


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the device called ``name`` (``None``: not in the table)."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def model_config(smoke: bool = False):
    """The LLaVA configuration: Qwen2-0.5B-shaped language model and a small CLIP tower (or,
    with ``smoke``, a miniature of both for a CPU check)."""
    from transformers import CLIPVisionConfig, LlavaConfig, Qwen2Config

    if smoke:
        text = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           tie_word_embeddings=True, max_position_embeddings=256)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=28, patch_size=14,
                                  projection_dim=32)
        image_token = 500
    else:
        text = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                           num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                           tie_word_embeddings=True, max_position_embeddings=32768,
                           rope_theta=1_000_000.0)
        vision = CLIPVisionConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=6,
                                  num_attention_heads=8, image_size=224, patch_size=14,
                                  projection_dim=512)
        image_token = IMAGE_TOKEN
    n_img = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token,
                       projector_hidden_act="gelu", vision_feature_select_strategy="default",
                       vision_feature_layer=-1, image_seq_length=n_img)


def _linear_weights(module: nn.Module) -> int:
    """Weights of every ``nn.Linear`` under ``module`` (LoRA's own excluded)."""
    return sum(m.weight.numel() for name, m in module.named_modules()
               if isinstance(m, nn.Linear) and ".lora_" not in name and "lora_" not in name)


def step_flops(model: nn.Module, cfg, batch: int, seq: int, lora_params: int) -> dict:
    """Model FLOPs of one optimizer step (see the module docstring), counted on ``model``:
    ``{"model": ..., "recompute": ...}`` (the second: checkpointing's extra forward)."""
    from fedmllm.model.loading import _unwrap, language_model

    inner = _unwrap(model)
    lm = language_model(inner)
    p_lm = _linear_weights(lm) + inner.lm_head.weight.numel()
    t = batch * seq
    tc = cfg.text_config
    d_attn = tc.num_attention_heads * (tc.hidden_size // tc.num_attention_heads)
    attn = 4 * tc.num_hidden_layers * seq * d_attn * t  # forward
    vc = cfg.vision_config
    tower = inner.model.vision_tower if hasattr(inner, "model") else inner.vision_tower
    projector = inner.model.multi_modal_projector if hasattr(inner, "model") \
        else inner.multi_modal_projector
    n_patch = (vc.image_size // vc.patch_size) ** 2
    n_tok = n_patch + 1  # + CLS
    conv = 3 * vc.patch_size ** 2 * vc.hidden_size  # patch embedding, per patch
    vision = batch * (2 * _linear_weights(tower) * n_tok + 2 * conv * n_patch
                      + 4 * vc.num_hidden_layers * n_tok * vc.hidden_size * n_tok
                      + 2 * _linear_weights(projector) * n_patch)
    # The first layer's q/k/v projections (and their LoRA A) get no input gradient: their
    # input, the embeddings, needs none.
    first = sum(m.weight.numel() for name, m in lm.layers[0].named_modules()
                if isinstance(m, nn.Linear) and any(f"{p}_proj" in name for p in "qkv")
                and "lora_B" not in name)
    return {"model": 4 * p_lm * t + 6 * lora_params * t - 2 * first * t + 3 * attn + vision,
            "recompute": 2 * p_lm * t + attn + 2 * lora_params * t,
            "p_lm": p_lm}


def make_batch(cfg, batch: int, seq: int, generator: torch.Generator) -> list:
    """``batch`` random samples: the image tokens, then random text, every text token
    supervised; one random image each."""
    from fedmllm.model.collate import Encoded

    vc, n_img = cfg.vision_config, cfg.image_seq_length
    if seq <= n_img:
        sys.exit(f"--seq must exceed the {n_img} image tokens")
    items = []
    for _ in range(batch):
        text = torch.randint(0, min(cfg.text_config.vocab_size, cfg.image_token_id),
                             (seq - n_img,), generator=generator)
        ids = torch.cat([torch.full((n_img,), cfg.image_token_id), text])
        labels = ids.clone()
        labels[:n_img] = -100
        pixels = torch.randn(1, 3, vc.image_size, vc.image_size, generator=generator)
        items.append(Encoded(ids, labels, {"pixel_values": pixels}, n_img))
    return items


def build(args, device: torch.device, dtype: torch.dtype):
    """The engine's bundle and trainer around the random model built from the config."""
    from transformers import LlavaForConditionalGeneration

    from fedmllm.engine.bundle import ModelBundle
    from fedmllm.engine.client import ClientTrainer
    from fedmllm.fl import make_objective
    from fedmllm.model.loading import enable_checkpointing, num_lm_layers
    from fedmllm.model.lora import AdapterState, wrap_lora

    cfg = model_config(args.smoke)
    torch.manual_seed(0)
    with torch.device(device):
        base = LlavaForConditionalGeneration(cfg).to(dtype)
    base.requires_grad_(False)
    model = wrap_lora(base, r=args.rank, alpha=2.0 * args.rank, dropout=args.dropout,
                      modules=args.modules).to(device)
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    processor = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0))
    autocast = torch.bfloat16 if device.type == "cuda" else None
    bundle = ModelBundle(model, processor, AdapterState(model), device, dtype,
                         num_lm_layers(model), "gpu_step (random init)", autocast=autocast)
    trainer = ClientTrainer(bundle, make_objective("ce"), optimizer="adamw", grad_clip=1.0)
    return cfg, bundle, trainer


def count_with_torch(trainer, items) -> int:
    """FLOPs of one training step as PyTorch's operator counter sees them (matmuls,
    attention, convolutions; no recomputation without checkpointing)."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    start = trainer.bundle.adapter.get()
    # the CPU's fused attention kernel is not in the counter's table; its math form is
    math = sdpa_kernel([SDPBackend.MATH]) if trainer.bundle.device.type == "cpu" \
        else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter, math:
        trainer.fit(start, {}, iter([items]), [1e-4], 0, num_examples=len(items))
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--modules", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    ap.add_argument("--smoke", action="store_true",
                    help="a miniature model, on the CPU if there is no GPU (checks the code)")
    ap.add_argument("--count-flops", action="store_true",
                    help="also count one step's FLOPs with torch's FlopCounterMode")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_step.py needs a CUDA GPU (it measures bf16 training throughput and MFU); "
              "none here, nothing measured. --smoke checks the code path on the CPU.")
        return 0
    if args.smoke:
        args.batch, args.seq = min(args.batch, 2), min(args.seq, 32)
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg, bundle, trainer = build(args, device, dtype)
    items = make_batch(cfg, args.batch, args.seq, torch.Generator().manual_seed(0))
    lora_params = sum(p.numel() for p in bundle.adapter.params.values())
    flops = step_flops(bundle.model, cfg, args.batch, args.seq, lora_params)
    base_params = sum(p.numel() for p in bundle.model.parameters()) - lora_params

    def run(steps: int) -> float:
        start = bundle.adapter.get()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.fit(start, {}, iter([items] * steps), [1e-4] * steps, 0,
                    num_examples=len(items))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    if args.warmup:
        run(args.warmup)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = run(args.steps) / args.steps
    tokens = args.batch * args.seq
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"device: {name}; torch {torch.__version__}")
    print(f"model: {base_params / 1e6:.1f} M base parameters (LM linear weights + head "
          f"{flops['p_lm'] / 1e6:.1f} M), LoRA r={args.rank} on {' '.join(args.modules)}: "
          f"{lora_params / 1e6:.2f} M trainable; batch {args.batch} x {args.seq} tokens "
          f"({cfg.image_seq_length} image tokens each); gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'}; "
          f"{'bf16 weights + bf16 autocast' if cuda else 'float32 (CPU)'}")
    print(f"step: {seconds * 1000:.1f} ms ({args.steps} steps after {args.warmup} warm-up); "
          f"{tokens / seconds:,.0f} tokens/s; model FLOPs/step {flops['model'] / 1e12:.2f} T "
          f"= {flops['model'] / seconds / 1e12:.1f} TFLOP/s")
    if cuda:
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    if peak:
        mfu = flops["model"] / seconds / (peak * 1e12)
        line = f"MFU: {mfu:.1%} of {peak:g} TFLOP/s dense bf16 (goal >= 40%)"
        if args.gradient_checkpointing:
            hfu = (flops["model"] + flops["recompute"]) / seconds / (peak * 1e12)
            line += f"; HFU with the recomputed forward: {hfu:.1%}"
        print(line)
    else:
        print(f"MFU: n/a (no bf16 peak known for {name!r}; give --peak-tflops)")
    if args.count_flops:
        counted = count_with_torch(trainer, items)
        print(f"FLOPs/step: formula {flops['model']:.4g}, torch FlopCounterMode {counted:.4g} "
              f"(ratio {flops['model'] / counted:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
