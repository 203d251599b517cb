"""MuonClip on CPU, the way Kimi K2 measured it: max attention logits and loss, AdamW vs Muon vs
MuonClip, same model, same data, same steps, measured in one run.

Model: the W1/nano DeepseekV3 (MLA + MoE, 4.6M parameters, character vocabulary), trained from
the same initial weights as a language model on two-digit additions ("Q: 37+48=\\nA: 85"),
32 sequences per step. Muon runs at a learning rate high enough for the max logits to grow;
MuonClip is the same optimizer with QK-Clip at a low tau (so the effect shows within minutes).
Writes muonclip_training.png and muonclip_training.json into --out.

    .venv/bin/python benchmarks/muonclip_training.py --steps 150 --out docs/img
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from machine import describe

from selfcritic.config import ModelConfig, OptimConfig
from selfcritic.model.attention_capture import AttentionLogitCapture
from selfcritic.model.build import load_model, prepare_model
from selfcritic.optim.muonclip import build_muonclip


def arithmetic_batches(tokenizer, steps: int, batch: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(steps):
        texts = []
        for _ in range(batch):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            texts.append(f"Q: {a}+{b}=\nA: {a + b}")
        ids = [
            [
                tokenizer.bos_token_id,
                *tokenizer(t, add_special_tokens=False).input_ids,
                tokenizer.eos_token_id,
            ]
            for t in texts
        ]
        width = max(map(len, ids))
        tensor = torch.zeros(batch, width, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for row, seq in enumerate(ids):
            tensor[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        yield tensor, mask


def train(path: Path, tokenizer, name: str, cfg: OptimConfig, adamw_only: bool, steps: int):
    torch.manual_seed(0)
    model = load_model(path).train()
    if adamw_only:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.adamw_lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay
        )
        capture = AttentionLogitCapture().install(model)  # measure only
    else:
        optimizer = build_muonclip(model, cfg)
        capture = optimizer.capture or AttentionLogitCapture().install(model)
    curve = {"loss": [], "max_logit": [], "heads_clipped": []}
    start = time.perf_counter()
    for ids, mask in arithmetic_batches(tokenizer, steps, batch=32):
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        loss.backward()
        curve["max_logit"].append(max(float(v.max()) for v in capture.max_logits.values()))
        metrics = optimizer.step() or {}
        optimizer.zero_grad()
        if adamw_only or not cfg.qk_clip:
            capture.reset()
        curve["loss"].append(float(loss.detach()))
        curve["heads_clipped"].append(metrics.get("muonclip/heads_clipped", 0.0))
    curve["seconds"] = time.perf_counter() - start
    print(
        f"{name:10s} final loss {sum(curve['loss'][-10:]) / 10:.3f}  max logit "
        f"{max(curve['max_logit']):.1f} (last {curve['max_logit'][-1]:.1f})  "
        f"heads clipped {int(sum(curve['heads_clipped']))}  {curve['seconds']:.0f} s"
    )
    return curve


def plot(curves: dict, tau: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, curve in curves.items():
        left.plot(curve["max_logit"], label=name)
        right.plot(curve["loss"], label=name)
    left.axhline(tau, color="grey", linestyle="--", label=f"tau = {tau:g}")
    left.set(title="max pre-softmax attention logit", xlabel="step", yscale="log")
    right.set(title="training loss", xlabel="step", yscale="log")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "muonclip_training.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--muon-lr", type=float, default=0.05)
    parser.add_argument("--adamw-lr", type=float, default=3e-3)
    parser.add_argument("--tau", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    print(f"start: {describe()}", flush=True)
    from transformers import AutoTokenizer

    path = prepare_model(ModelConfig(), Path(tempfile.gettempdir()) / "selfcritic-bench")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    base = dict(muon_lr=args.muon_lr, adamw_lr=args.adamw_lr, router_bias_update=1e-3)
    runs = {
        "AdamW": (OptimConfig(**base, qk_clip=False), True),
        "Muon": (OptimConfig(**base, qk_clip=False), False),
        "MuonClip": (OptimConfig(**base, qk_clip=True, qk_clip_tau=args.tau), False),
    }
    curves = {
        name: train(path, tokenizer, name, cfg, adamw, args.steps)
        for name, (cfg, adamw) in runs.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.tau, args.out)
    (args.out / "muonclip_training.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "curves": curves})
    )


if __name__ == "__main__":
    main()
