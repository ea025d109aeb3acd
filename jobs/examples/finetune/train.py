#!/usr/bin/env python3
"""finetune -- a small but real training job for longrun, in numpy (runs on CPU).

Trains a 2-layer MLP (tanh hidden layer, softmax output) with minibatch SGD. By default on
a deterministic synthetic dataset: points from the seed, labelled by which of several
interleaved spiral arms they lie on, so a linear model cannot fit it and the loss visibly
falls epoch by epoch. Or on an uploaded training file of features and labels.

Input (LONGRUN_INPUT_FILE, all optional):
    trainFile      the name of an uploaded file (a key of the submit's `files`): a .csv or
                   .jsonl of features and labels as longrun.data reads them; features are
                   standardised. Without it, the synthetic spirals.
    epochs         epochs in all (default: $EPOCHS_DEFAULT from the queue's env, else 3)
    learningRate   SGD step size (default 0.1)
    seed           dataset, initial weights and batch order (default 0)
    stepsPerEpoch  minibatch steps per epoch (default 2000: about 0.5-1 s per epoch on CPU)
    batchSize      examples per step (default 128)
    hiddenUnits    width of the hidden layer (default 256)

The job contract (SPEC section 4) is longrun.job's (jobs/python):
    * One checkpoint per epoch, saved by job.progress just before the progress it
      describes: weights, the epoch and step reached, and the batch sampler's RNG state.
    * SIGTERM: finish the current step, save a checkpoint at that step, exit 143. A later
      attempt resumes there, and because the RNG state is restored the run ends with the
      same weights as one that was never interrupted.
    * result.json: final loss and accuracy on the whole dataset, epochs, the epoch and step
      this attempt resumed from; the weights as the artifact model.npz.

`longrun` is importable without installing it when the embedded server runs the job (its
runner puts jobs/python/src on PYTHONPATH); the AWS job image installs it with pip.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from typing import Any, Dict, Tuple

import numpy as np
from longrun import job
from longrun.data import read_labelled

Weights = Dict[str, np.ndarray]

SPIRAL_CLASSES = 3
SPIRAL_POINTS = 3000


def make_spirals(seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Noisy interleaved spirals: SPIRAL_CLASSES arms of SPIRAL_POINTS / SPIRAL_CLASSES points."""
    rng = np.random.default_rng([seed, 1])
    per = SPIRAL_POINTS // SPIRAL_CLASSES
    xs, ys = [], []
    for k in range(SPIRAL_CLASSES):
        r = np.linspace(0.05, 1.0, per)
        start = k * 2 * np.pi / SPIRAL_CLASSES
        theta = np.linspace(start, start + 6.0, per) + rng.normal(0.0, 0.15, per)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(per, k))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def load_dataset(inp: Dict[str, Any], seed: int) -> Tuple[np.ndarray, np.ndarray, str]:
    """(features, labels, what the data is) from the input's trainFile, else the spirals."""
    name = inp.get("trainFile")
    if name is None:
        x, y = make_spirals(seed)
        return x, y, "synthetic"
    path = job.input_path(str(name))
    features, labels = read_labelled(path)
    x = np.asarray(features, dtype=np.float64)
    # Standardised, so that the wide first-layer init below suits any scale of features.
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return x, np.asarray(labels), f"{name}:sha256:{digest}"


def init_weights(seed: int, n_in: int, hidden: int, n_classes: int) -> Weights:
    rng = np.random.default_rng([seed, 2])
    # Inputs lie in [-1, 1]: a wide first-layer init gives the tanh units enough frequency
    # to bend around the spiral arms, so a few epochs of plain SGD already fit them.
    return {
        "w1": rng.normal(0.0, 4.0, (n_in, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, n_classes)),
        "b2": np.zeros(n_classes),
    }


def forward(p: Weights, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return h, e / e.sum(axis=1, keepdims=True)


def sgd_step(p: Weights, x: np.ndarray, y: np.ndarray, lr: float) -> None:
    h, probs = forward(p, x)
    d_logits = probs
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_h = (d_logits @ p["w2"].T) * (1.0 - h * h)
    p["w2"] -= lr * (h.T @ d_logits)
    p["b2"] -= lr * d_logits.sum(axis=0)
    p["w1"] -= lr * (x.T @ d_h)
    p["b1"] -= lr * d_h.sum(axis=0)


def evaluate(p: Weights, x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    _, probs = forward(p, x)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    accuracy = float((probs.argmax(axis=1) == y).mean())
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
    n_classes = int(y.max()) + 1

    # What a checkpoint must match to be resumed: everything that shapes the trajectory.
    config = {
        "seed": seed,
        "lr": lr,
        "steps": steps_per_epoch,
        "batch": batch,
        "hidden": hidden,
        "data": data,
    }
    state = job.load_checkpoint()
    if state is not None and state["config"] != config:
        # Another input would make resuming meaningless (and shapes may not even match).
        print(f"train: checkpoint made with {state['config']}, not {config}; starting over")
        state = None
    if state is not None:
        p, epoch, step = state["weights"], state["epoch"], state["step"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        print(f"train: attempt {job.attempt} resuming at epoch {epoch + 1}, step {step}")
    else:
        p, epoch, step = init_weights(seed, x.shape[1], hidden, n_classes), 0, 0
        rng = np.random.default_rng([seed, 3])
        print(f"train: attempt {job.attempt} starting, {epochs} epochs on {data} data")
    resumed_from_epoch, resumed_from_step = epoch, step

    def snapshot() -> Dict[str, Any]:
        return {
            "weights": p,
            "epoch": epoch,
            "step": step,
            "rng": rng.bit_generator.state,
            "config": config,
        }

    while epoch < epochs:
        t0 = time.monotonic()
        while step < steps_per_epoch:
            if job.stop_requested():
                job.exit_stopped(
                    checkpoint=snapshot(),
                    message=f"train: SIGTERM at epoch {epoch + 1} step {step}; checkpoint saved",
                )
            idx = rng.integers(0, len(y), batch)
            sgd_step(p, x[idx], y[idx], lr)
            step += 1
        epoch, step = epoch + 1, 0
        loss, acc = evaluate(p, x, y)
        message = f"epoch {epoch}/{epochs} loss={loss:.4f} acc={acc:.3f}"
        job.progress(epoch, epochs, message, checkpoint=snapshot())
        print(f"train: {message} ({time.monotonic() - t0:.2f}s)")

    loss, acc = evaluate(p, x, y)
    np.savez(job.output_dir / "model.npz", w1=p["w1"], b1=p["b1"], w2=p["w2"], b2=p["b2"])
    job.write_result(
        {
            "loss": loss,
            "accuracy": acc,
            "epochs": epochs,
            "resumedFromEpoch": resumed_from_epoch,
            "resumedFromStep": resumed_from_step,
            "attempt": job.attempt,
            "seed": seed,
            "learningRate": lr,
            "data": data,
            "examples": len(y),
            "classes": n_classes,
        }
    )
    print(f"train: done, loss={loss:.4f} accuracy={acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
