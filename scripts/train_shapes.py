"""Train the bundled shapes model and write resources/models/shapes.pt.

    python scripts/train_shapes.py [--train 24000] [--epochs 8] [--out resources/models/shapes.pt]

Resumable: progress is saved after every epoch to OUT.partial and picked up again on the next run.
Prints held-out accuracy on freshly generated images (a seed never used for training).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explorer.core.models.shapes_data import SHAPE_CLASSES, generate_batch  # noqa: E402
from explorer.core.models.shapes import (SHAPES_FORMAT, SHAPES_INPUT_SIZE, SHAPES_MEAN,  # noqa: E402
                                      SHAPES_STD, ShapesNet)

TEST_SEED = 1_000_003


def to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), 256):
        logits = model(to_tensor(images[i:i + 256]))
        correct += (logits.argmax(1).numpy() == labels[i:i + 256]).sum()
    return correct / len(images)


def train_step(model: nn.Module, opt, sched, images: np.ndarray, labels: np.ndarray,
               rng: np.random.Generator) -> torch.Tensor:
    """One optimiser step on a batch, mirrored half of the time (the classes are mirror-symmetric)."""
    x = to_tensor(images)
    if rng.random() < 0.5:
        x = x.flip(3)
    loss = nn.functional.cross_entropy(model(x), torch.from_numpy(labels))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.detach()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=24000)
    ap.add_argument("--test", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune", type=int, default=0, metavar="STEPS",
                    help="instead of the full schedule: load the .partial weights and anneal the learning rate "
                         "from 1e-3 to 0 over STEPS steps, then write the model")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "resources/models/shapes.pt"))
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    partial = out.with_suffix(".partial")

    t0 = time.time()
    train_x, train_y = generate_batch(args.seed, args.train)
    test_x, test_y = generate_batch(TEST_SEED, args.test)
    print(f"generated {len(train_x)} train / {len(test_x)} held-out images in {time.time() - t0:.0f}s", flush=True)

    model = ShapesNet()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps_per_epoch = (len(train_x) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch)
    start_epoch = 0
    if partial.exists():
        state = torch.load(partial, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch = state["epoch"]
        print(f"resuming after epoch {start_epoch}", flush=True)

    rng = np.random.default_rng(args.seed + 1 + start_epoch)
    if args.finetune:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.finetune)
        model.train()
        for step in range(args.finetune):
            idx = rng.choice(len(train_x), args.batch, replace=False)
            loss = train_step(model, opt, sched, train_x[idx], train_y[idx], rng)
            if (step + 1) % 50 == 0:
                print(f"finetune step {step + 1}/{args.finetune} loss {loss.item():.4f} ({time.time() - t0:.0f}s)",
                      flush=True)
        start_epoch = args.epochs  # skip the schedule below
    for epoch in range(start_epoch, args.epochs):
        model.train()
        order = rng.permutation(len(train_x))
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch:(step + 1) * args.batch]
            total += train_step(model, opt, sched, train_x[idx], train_y[idx], rng).item()
        acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs} loss {total / steps_per_epoch:.4f} held-out accuracy {acc:.4f}"
              f" ({time.time() - t0:.0f}s)", flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1}, partial)

    acc = accuracy(model, test_x, test_y)
    torch.save({
        "format": SHAPES_FORMAT, "arch": "shapes_net", "labels": list(SHAPE_CLASSES),
        "input": {"size": list(SHAPES_INPUT_SIZE), "channels": 3, "mean": list(SHAPES_MEAN),
                  "std": list(SHAPES_STD)},
        "held_out_accuracy": float(acc), "state_dict": model.state_dict(),
    }, out)
    partial.unlink(missing_ok=True)
    print(f"held-out accuracy {acc:.4f} on {len(test_x)} images; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
