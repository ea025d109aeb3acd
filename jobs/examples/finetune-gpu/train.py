#!/usr/bin/env python3
"""finetune-gpu -- the finetune example in PyTorch, on CUDA when a GPU is present.

Same input and job contract as jobs/examples/finetune/train.py (the numpy version), through
longrun.job (jobs/python): a 2-layer MLP trained with minibatch SGD on deterministic
synthetic spirals or on an uploaded training file (`trainFile`, a .csv or .jsonl of
features and labels as longrun.data reads them); one checkpoint per epoch (model,
optimizer, epoch, step and the batch sampler's RNG state, with torch.save) saved by
job.progress just before the progress it describes; SIGTERM saves a checkpoint at the
current step and exits 143, and a later attempt resumes from it. result.json holds the
final loss and accuracy; the weights are the artifact model.pt.

Input (LONGRUN_INPUT_FILE, all optional): trainFile, epochs (default $EPOCHS_DEFAULT, else
3), learningRate (0.1), seed (0), stepsPerEpoch (2000), batchSize (128), hiddenUnits (256).

Falls back to the CPU when torch.cuda.is_available() is false, so it also runs on a laptop.
`longrun` comes from PYTHONPATH under the embedded runner, from pip in the job image.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from typing import Any, Dict, Tuple

import torch
from longrun import job
from longrun.data import read_labelled
from torch import nn

SPIRAL_CLASSES = 3
SPIRAL_POINTS = 3000


def make_spirals(seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Noisy interleaved spirals, generated on the CPU so every device sees the same data."""
    g = torch.Generator().manual_seed(seed * 1000 + 1)
    per = SPIRAL_POINTS // SPIRAL_CLASSES
    xs, ys = [], []
    for k in range(SPIRAL_CLASSES):
        r = torch.linspace(0.05, 1.0, per)
        start = k * 2 * math.pi / SPIRAL_CLASSES
        theta = torch.linspace(start, start + 6.0, per) + 0.15 * torch.randn(per, generator=g)
        xs.append(torch.stack([r * torch.sin(theta), r * torch.cos(theta)], dim=1))
        ys.append(torch.full((per,), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def load_dataset(inp: Dict[str, Any], seed: int) -> Tuple[torch.Tensor, torch.Tensor, str]:
    """(features, labels, what the data is) from the input's trainFile, else the spirals."""
    name = inp.get("trainFile")
    if name is None:
        x, y = make_spirals(seed)
        return x, y, "synthetic"
    path = job.input_path(str(name))
    features, labels = read_labelled(path)
    x = torch.tensor(features, dtype=torch.float32)
    # Standardised, so that the wide first-layer init below suits any scale of features.
    std = x.std(dim=0, unbiased=False)
    x = (x - x.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return x, torch.tensor(labels, dtype=torch.long), f"{name}:sha256:{digest}"


def make_model(seed: int, n_in: int, hidden: int, n_classes: int) -> nn.Sequential:
    torch.manual_seed(seed * 1000 + 2)
    model = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))
    # Inputs lie in [-1, 1]: wide first-layer weights let tanh units bend around the arms.
    nn.init.normal_(model[0].weight, 0.0, 4.0)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Tuple[float, float]:
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def main() -> int:
    inp = job.input if isinstance(job.input, dict) else {}
    epochs = int(inp.get("epochs", os.environ.get("EPOCHS_DEFAULT", 3)))
    lr = float(inp.get("learningRate", 0.1))
    seed = int(inp.get("seed", 0))
    steps_per_epoch = int(inp.get("stepsPerEpoch", 2000))
    batch = int(inp.get("batchSize", 128))
    hidden = int(inp.get("hiddenUnits", 256))
    if epochs < 0 or steps_per_epoch < 1 or batch < 1 or hidden < 1 or not lr > 0:
        print(f"train: invalid input {inp}", file=sys.stderr)
        return 2
    try:
        x, y, data = load_dataset(inp, seed)
    except (OSError, ValueError) as e:
        print(f"train: cannot read the training file: {e}", file=sys.stderr)
        return 2
    n_classes = int(y.max().item()) + 1

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # torch.save and torch.load instead of pickle: tensors saved on a GPU load on this device.
    job.configure_checkpoints(
        name="checkpoint.pt",
        dump=torch.save,
        load=lambda f: torch.load(f, map_location=device, weights_only=False),
    )
    print(f"train: attempt {job.attempt} on {device}")
    x, y = x.to(device), y.to(device)
    model = make_model(seed, x.shape[1], hidden, n_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    sampler = torch.Generator().manual_seed(seed * 1000 + 3)
    config = {
        "seed": seed,
        "lr": lr,
        "steps": steps_per_epoch,
        "batch": batch,
        "hidden": hidden,
        "data": data,
    }
    epoch, step = 0, 0

    ck = job.load_checkpoint()
    if ck is not None and ck["config"] == config:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        sampler.set_state(ck["sampler"])
        epoch, step = ck["epoch"], ck["step"]
        print(f"train: resuming at epoch {epoch + 1}, step {step}")
    elif ck is not None:
        print(f"train: checkpoint made with {ck['config']}; starting over")
    resumed_from_epoch, resumed_from_step = epoch, step

    def snapshot() -> Dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "sampler": sampler.get_state(),
            "epoch": epoch,
            "step": step,
            "config": config,
        }

    while epoch < epochs:
        t0 = time.monotonic()
        model.train()
        while step < steps_per_epoch:
            if job.stop_requested():
                job.exit_stopped(
                    checkpoint=snapshot(),
                    message=f"train: SIGTERM at epoch {epoch + 1} step {step}; checkpoint saved",
                )
            # Indices drawn on the CPU generator so the batch order survives a resume.
            idx = torch.randint(0, len(y), (batch,), generator=sampler).to(device)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epoch, step = epoch + 1, 0
        loss_value, acc = evaluate(model.eval(), x, y)
        message = f"epoch {epoch}/{epochs} loss={loss_value:.4f} acc={acc:.3f}"
        job.progress(epoch, epochs, message, checkpoint=snapshot())
        print(f"train: {message} ({time.monotonic() - t0:.2f}s)")

    loss_value, acc = evaluate(model.eval(), x, y)
    torch.save(model.state_dict(), job.output_dir / "model.pt")
    job.write_result(
        {
            "loss": loss_value,
            "accuracy": acc,
            "epochs": epochs,
            "resumedFromEpoch": resumed_from_epoch,
            "resumedFromStep": resumed_from_step,
            "attempt": job.attempt,
            "device": str(device),
            "data": data,
            "examples": len(y),
            "classes": n_classes,
        }
    )
    print(f"train: done, loss={loss_value:.4f} accuracy={acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
