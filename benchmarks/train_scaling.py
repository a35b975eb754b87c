"""Training throughput: the plain-PyTorch loop against Ray Train with 1 and 2 workers.

    python benchmarks/train_scaling.py [--quick] [--json FILE] [--workers 1,2] [--set a.b=c]

Every row trains the cross-domain model on the synthetic world (the configured ``train.stages``,
by default one ``joint`` stage; frozen item tower) and reports training samples per second:
next-item positions trained on, divided by the time spent in training steps (validation and
checkpointing excluded).

* ``plain-pytorch``: `CrossRecTrainer` in this process, no Ray (all CPU threads).
* ``ray-train``: the same loop on N Ray Train CPU workers (gloo DDP, one CPU each) on a local
  Ray; ``train.batch_size`` is the global batch, so the optimizer steps per epoch are the same.

On a CUDA host it adds the plain loop on the GPU in ``frozen`` and ``lora`` modes, the text
encoder's texts/s in bf16, and the share of the GPU's peak dense bf16 throughput that encoding
achieves (model FLOPs = 2 x parameters x tokens per text).

JSON: ``{"rows": [{"runner", "workers", "device", "mode", "samples_per_s", ...}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from crossrec.config import CrossRecConfig, load_config, with_overrides
from crossrec.data.loaders import load_dataset
from crossrec.data.splits import make_split
from crossrec.errors import CrossRecError
from crossrec.experiments import target_domains_for

# Peak dense bf16 tensor throughput (TFLOP/s) by GPU name, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
}


def build_config(quick: bool, extra: list[str]) -> CrossRecConfig:
    overrides = [
        "data.synthetic.num_users=" + ("600" if quick else "3000"),
        "train.pretrain_max_epochs=" + ("2" if quick else "3"),
        "train.max_epochs=" + ("2" if quick else "3"),
        "train.patience=5",
        "train.ranker_epochs=0",
        "eval.protocols=[full]",
    ]
    return load_config(None, [*overrides, *extra])


def _rate(history: list[dict[str, Any]]) -> tuple[float, float]:
    samples = sum(float(h["samples"]) for h in history)
    seconds = sum(float(h["train_seconds"]) for h in history)
    return samples, seconds


def plain_loop(cfg: CrossRecConfig, device: str, mode: str) -> dict[str, Any]:
    """The single-process loop on ``device``; ``mode`` is the item tower mode."""
    from crossrec.models.crossrec_model import CrossRecModel
    from crossrec.trainer import CrossRecTrainer

    if mode == "lora":
        cfg = with_overrides(cfg, ["model.item_mode=lora", "train.finetune=lora"])
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    torch.manual_seed(cfg.train.seed)
    model = CrossRecModel.for_dataset(dataset, cfg).to_device(device)
    trainer = CrossRecTrainer(model, split, cfg, split.target_domains[0])
    history: list[dict[str, Any]] = []
    for stage in cfg.train.stages:
        history += trainer.run_stage(stage).history
    samples, seconds = _rate(history)
    return {
        "runner": "plain-pytorch",
        "workers": 1,
        "device": device,
        "mode": mode,
        "samples": int(samples),
        "train_seconds": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 1),
    }


def ray_train(cfg: CrossRecConfig, workers: int, storage: Path) -> dict[str, Any]:
    from training.pipeline import run_training

    cfg = with_overrides(cfg, [f"train.num_workers={workers}", f"train.storage_path={storage}"])
    run = run_training(cfg, name=f"scaling-{workers}")
    history = [h for stage in run.stages for h in stage.history]
    samples, seconds = _rate(history)
    return {
        "runner": "ray-train",
        "workers": workers,
        "device": "cpu",
        "mode": "frozen",
        "samples": int(samples),
        "train_seconds": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 1),
    }


def encoder_throughput(cfg: CrossRecConfig, quick: bool) -> dict[str, Any]:
    """Texts/s of the text encoder in bf16 on the GPU, and the share of peak bf16 FLOP/s."""
    from crossrec.data.synthetic import generate_world
    from crossrec.encoders.items import item_texts
    from crossrec.encoders.template import ItemTextTemplate
    from crossrec.encoders.text_encoder import TextEncoder

    encoder = TextEncoder.from_config(cfg.encoder)
    template = ItemTextTemplate.from_config(cfg.encoder)
    texts = item_texts(generate_world(cfg.data.synthetic), template)
    texts = (texts * (1 + (2_000 if quick else 20_000) // len(texts)))[: 2_000 if quick else 20_000]
    batch = 512
    encoder.encode(texts[:batch], batch_size=batch)  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    encoder.encode(texts, batch_size=batch)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    encoded = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)
    tokens = sum(len(ids) for ids in encoded["input_ids"])
    params = sum(p.numel() for p in encoder.backbone.parameters())
    achieved = 2.0 * params * tokens / seconds / 1e12
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return {
        "runner": "encoder",
        "workers": 1,
        "device": name,
        "mode": "encoder-bf16",
        "texts_per_s": round(len(texts) / seconds, 1),
        "tflops": round(achieved, 2),
        "peak_bf16_tflops": peak,
        "peak_fraction": round(achieved / peak, 4) if peak else None,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| runner | workers | device | mode | samples/s | texts/s | peak bf16 share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r.get("peak_fraction")
        lines.append(
            f"| {r['runner']} | {r['workers']} | {r['device']} | {r['mode']} | "
            f"{r.get('samples_per_s', '')} | {r.get('texts_per_s', '')} | "
            f"{'' if share is None else f'{share:.1%}'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smaller world (under 5 min).")
    parser.add_argument("--json", type=Path, help="Write the rows to this JSON file.")
    parser.add_argument("--workers", default="1,2", help="Ray Train worker counts to run.")
    parser.add_argument("--set", action="append", default=[], help="Config override a.b=c.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = build_config(args.quick, args.set)
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except (CrossRecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")

    add(plain_loop(cfg, "cpu", "frozen"))
    with tempfile.TemporaryDirectory(prefix="crossrec-scaling-") as storage:
        for n in workers:
            add(ray_train(cfg, n, Path(storage)))
    if torch.cuda.is_available():
        add(plain_loop(cfg, "cuda", "frozen"))
        add(plain_loop(cfg, "cuda", "lora"))
        add(encoder_throughput(cfg, args.quick))
    else:
        print("no CUDA device: GPU rows (frozen, lora, encoder bf16) skipped")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
