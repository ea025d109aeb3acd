#!/usr/bin/env python3
"""finetune-gpu -- the finetune example in PyTorch, on CUDA when a GPU is present.

Same job contract and input as jobs/examples/finetune/train.py (the numpy version): a
2-layer MLP trained with minibatch SGD on deterministic synthetic spirals, one checkpoint
per epoch (model, optimizer, epoch, step and the batch sampler's RNG state, written to a
temp file and moved into place with os.replace), progress after each checkpoint, SIGTERM
saves a checkpoint at the current step and exits 143, a later attempt resumes from it.
result.json holds the final loss and accuracy; the weights are the artifact model.pt.

Input (LONGRUN_INPUT_FILE, all optional): epochs (default $EPOCHS_DEFAULT, else 3),
learningRate (0.1), seed (0), stepsPerEpoch (2000), batchSize (128), hiddenUnits (256).

Falls back to the CPU when torch.cuda.is_available() is false, so it also runs on a laptop.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time

import torch
from torch import nn

ENV = os.environ
ATTEMPT = int(ENV.get("LONGRUN_ATTEMPT", "1"))
OUTPUT_DIR = ENV.get("LONGRUN_OUTPUT_DIR", "out")
CHECKPOINT_DIR = ENV.get("LONGRUN_CHECKPOINT_DIR", "checkpoint")
PROGRESS_FILE = ENV.get("LONGRUN_PROGRESS_FILE")
CHECKPOINT = os.path.join(CHECKPOINT_DIR, "checkpoint.pt")
N_CLASSES = 3
N_POINTS = 3000


def read_input() -> dict:
    path = ENV.get("LONGRUN_INPUT_FILE")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else {}


def save_atomic(obj, path: str) -> None:
    """torch.save to a temp file, fsync, then rename: readers see the old file or the new."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_dataset(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy interleaved spirals, generated on the CPU so every device sees the same data."""
    g = torch.Generator().manual_seed(seed * 1000 + 1)
    per = N_POINTS // N_CLASSES
    xs, ys = [], []
    for k in range(N_CLASSES):
        r = torch.linspace(0.05, 1.0, per)
        start = k * 2 * math.pi / N_CLASSES
        theta = torch.linspace(start, start + 6.0, per) + 0.15 * torch.randn(per, generator=g)
        xs.append(torch.stack([r * torch.sin(theta), r * torch.cos(theta)], dim=1))
        ys.append(torch.full((per,), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def make_model(seed: int, hidden: int) -> nn.Module:
    torch.manual_seed(seed * 1000 + 2)
    model = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, N_CLASSES))
    # Inputs lie in [-1, 1]: wide first-layer weights let tanh units bend around the arms.
    nn.init.normal_(model[0].weight, 0.0, 4.0)
    return model


def report(current: int, total: int, message: str) -> None:
    if not PROGRESS_FILE:
        return
    tmp = f"{PROGRESS_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"current": current, "total": total, "message": message}, f)
    os.replace(tmp, PROGRESS_FILE)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def main() -> int:
    inp = read_input()
    epochs = int(inp.get("epochs", ENV.get("EPOCHS_DEFAULT", 3)))
    lr = float(inp.get("learningRate", 0.1))
    seed = int(inp.get("seed", 0))
    steps_per_epoch = int(inp.get("stepsPerEpoch", 2000))
    batch = int(inp.get("batchSize", 128))
    hidden = int(inp.get("hiddenUnits", 256))
    if epochs < 0 or steps_per_epoch < 1 or batch < 1 or hidden < 1 or not lr > 0:
        print(f"train: invalid input {inp}", file=sys.stderr)
        return 2
    os.makedirs(CHECKPOINT_DIR, exist_ok=True)
    os.makedirs(OUTPUT_DIR, exist_ok=True)

    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"train: attempt {ATTEMPT} on {device}", flush=True)
    x, y = make_dataset(seed)
    x, y = x.to(device), y.to(device)
    model = make_model(seed, hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    sampler = torch.Generator().manual_seed(seed * 1000 + 3)
    config = {"seed": seed, "lr": lr, "steps": steps_per_epoch, "batch": batch, "hidden": hidden}
    epoch, step = 0, 0

    if os.path.exists(CHECKPOINT):
        ck = torch.load(CHECKPOINT, map_location=device, weights_only=False)
        if ck["config"] == config:
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            sampler.set_state(ck["sampler"])
            epoch, step = ck["epoch"], ck["step"]
            print(f"train: resuming at epoch {epoch + 1}, step {step}", flush=True)
        else:
            print(f"train: checkpoint made with {ck['config']}; starting over", flush=True)
    resumed_from_epoch, resumed_from_step = epoch, step

    def checkpoint() -> None:
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.get_state(),
                "epoch": epoch,
                "step": step,
                "config": config,
            },
            CHECKPOINT,
        )

    while epoch < epochs:
        t0 = time.monotonic()
        model.train()
        while step < steps_per_epoch:
            if stop["requested"]:
                checkpoint()
                print(f"train: SIGTERM at epoch {epoch + 1} step {step}; checkpoint saved", flush=True)
                return 143
            # Indices drawn on the CPU generator so the batch order survives a resume.
            idx = torch.randint(0, len(y), (batch,), generator=sampler).to(device)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epoch, step = epoch + 1, 0
        checkpoint()
        loss_value, acc = evaluate(model.eval(), x, y)
        report(epoch, epochs, f"epoch {epoch}/{epochs} loss={loss_value:.4f} acc={acc:.3f}")
        print(
            f"train: epoch {epoch}/{epochs} loss={loss_value:.4f} acc={acc:.3f} "
            f"({time.monotonic() - t0:.2f}s)",
            flush=True,
        )

    loss_value, acc = evaluate(model.eval(), x, y)
    save_atomic(model.state_dict(), os.path.join(OUTPUT_DIR, "model.pt"))
    result = {
        "loss": loss_value,
        "accuracy": acc,
        "epochs": epochs,
        "resumedFromEpoch": resumed_from_epoch,
        "resumedFromStep": resumed_from_step,
        "attempt": ATTEMPT,
        "device": str(device),
    }
    with open(os.path.join(OUTPUT_DIR, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    print(f"train: done, loss={loss_value:.4f} accuracy={acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
