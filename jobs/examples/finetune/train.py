#!/usr/bin/env python3
"""finetune -- a small but real training job for longrun, in numpy (runs on CPU).

Trains a 2-layer MLP (tanh hidden layer, softmax output) with minibatch SGD on a
deterministic synthetic dataset: points from the seed, labelled by which of several
interleaved spiral arms they lie on, so a linear model cannot fit it and the loss visibly
falls epoch by epoch.

Input (LONGRUN_INPUT_FILE, all optional):
    epochs         epochs in all (default: $EPOCHS_DEFAULT from the queue's env, else 3)
    learningRate   SGD step size (default 0.1)
    seed           dataset, initial weights and batch order (default 0)
    stepsPerEpoch  minibatch steps per epoch (default 2000: about 0.5-1 s per epoch on CPU)
    batchSize      examples per step (default 128)
    hiddenUnits    width of the hidden layer (default 256)

Job contract (SPEC section 4):
    * One checkpoint per epoch in LONGRUN_CHECKPOINT_DIR/checkpoint.npz: weights, the epoch
      and step reached, and the batch sampler's RNG state, written to a temp file and moved
      into place with os.replace. Progress is written (also atomically) after it, so the
      runner's save on progress change always holds a complete epoch.
    * SIGTERM: finish the current step, save a checkpoint at that step, exit 143. A later
      attempt resumes there, and because the RNG state is restored the run ends with the
      same weights as one that was never interrupted.
    * result.json: final loss and accuracy on the whole dataset, epochs, the epoch and step
      this attempt resumed from; the weights as the artifact model.npz.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

ENV = os.environ
ATTEMPT = int(ENV.get("LONGRUN_ATTEMPT", "1"))
OUTPUT_DIR = ENV.get("LONGRUN_OUTPUT_DIR", "out")
CHECKPOINT_DIR = ENV.get("LONGRUN_CHECKPOINT_DIR", "checkpoint")
PROGRESS_FILE = ENV.get("LONGRUN_PROGRESS_FILE")
CHECKPOINT = os.path.join(CHECKPOINT_DIR, "checkpoint.npz")

N_CLASSES = 3
N_POINTS = 3000


def read_input() -> dict:
    path = ENV.get("LONGRUN_INPUT_FILE")
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else {}


def write_atomic(path: str, write) -> None:
    """Writes through `write(fileobj)` to a temp file, then renames it over `path`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_dataset(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy interleaved spirals: N_CLASSES arms of N_POINTS / N_CLASSES points each."""
    rng = np.random.default_rng([seed, 1])
    per = N_POINTS // N_CLASSES
    xs, ys = [], []
    for k in range(N_CLASSES):
        r = np.linspace(0.05, 1.0, per)
        theta = np.linspace(k * 2 * np.pi / N_CLASSES, k * 2 * np.pi / N_CLASSES + 6.0, per)
        theta = theta + rng.normal(0.0, 0.15, per)
        xs.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        ys.append(np.full(per, k))
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys)


def init_weights(seed: int, hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 2])
    # Inputs lie in [-1, 1]: a wide first-layer init gives the tanh units enough frequency
    # to bend around the spiral arms, so a few epochs of plain SGD already fit them.
    return {
        "w1": rng.normal(0.0, 4.0, (2, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, N_CLASSES)),
        "b2": np.zeros(N_CLASSES),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return h, e / e.sum(axis=1, keepdims=True)


def sgd_step(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> None:
    h, probs = forward(p, x)
    d_logits = probs
    d_logits[np.arange(len(y)), y] -= 1.0
    d_logits /= len(y)
    d_h = (d_logits @ p["w2"].T) * (1.0 - h * h)
    p["w2"] -= lr * (h.T @ d_logits)
    p["b2"] -= lr * d_logits.sum(axis=0)
    p["w1"] -= lr * (x.T @ d_h)
    p["b1"] -= lr * d_h.sum(axis=0)


def evaluate(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    _, probs = forward(p, x)
    loss = float(-np.log(probs[np.arange(len(y)), y] + 1e-12).mean())
    accuracy = float((probs.argmax(axis=1) == y).mean())
    return loss, accuracy


def save_checkpoint(p, epoch: int, step: int, rng: np.random.Generator, config: dict) -> None:
    state = json.dumps(rng.bit_generator.state)
    write_atomic(
        CHECKPOINT,
        lambda f: np.savez(
            f,
            epoch=epoch,
            step=step,
            rng_state=np.array(state),
            config=np.array(json.dumps(config, sort_keys=True)),
            **p,
        ),
    )


def load_checkpoint(config: dict):
    """(weights, epoch, step, rng) from the checkpoint, or None when there is none."""
    if not os.path.exists(CHECKPOINT):
        return None
    with np.load(CHECKPOINT) as ck:
        saved = json.loads(str(ck["config"]))
        if saved != config:
            # Another input would make resuming meaningless (and shapes may not even match).
            print(f"train: checkpoint was made with {saved}, not {config}; starting over", flush=True)
            return None
        p = {k: ck[k].copy() for k in ("w1", "b1", "w2", "b2")}
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(str(ck["rng_state"]))
        return p, int(ck["epoch"]), int(ck["step"]), rng


def report(current: int, total: int, message: str) -> None:
    if PROGRESS_FILE:
        body = json.dumps({"current": current, "total": total, "message": message}).encode()
        write_atomic(PROGRESS_FILE, lambda f: f.write(body))


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

    x, y = make_dataset(seed)
    # What a checkpoint must match to be resumed: everything that shapes the trajectory.
    config = {"seed": seed, "lr": lr, "steps": steps_per_epoch, "batch": batch, "hidden": hidden}
    resumed = load_checkpoint(config)
    if resumed:
        p, epoch, step, rng = resumed
        print(f"train: attempt {ATTEMPT} resuming at epoch {epoch + 1}, step {step}", flush=True)
    else:
        p, epoch, step = init_weights(seed, hidden), 0, 0
        rng = np.random.default_rng([seed, 3])
        print(f"train: attempt {ATTEMPT} starting, {epochs} epochs", flush=True)
    resumed_from_epoch, resumed_from_step = epoch, step

    while epoch < epochs:
        t0 = time.monotonic()
        while step < steps_per_epoch:
            if stop["requested"]:
                save_checkpoint(p, epoch, step, rng, config)
                print(f"train: SIGTERM at epoch {epoch + 1} step {step}; checkpoint saved", flush=True)
                return 143
            idx = rng.integers(0, len(y), batch)
            sgd_step(p, x[idx], y[idx], lr)
            step += 1
        epoch, step = epoch + 1, 0
        save_checkpoint(p, epoch, step, rng, config)
        loss, acc = evaluate(p, x, y)
        report(epoch, epochs, f"epoch {epoch}/{epochs} loss={loss:.4f} acc={acc:.3f}")
        print(
            f"train: epoch {epoch}/{epochs} loss={loss:.4f} acc={acc:.3f} "
            f"({time.monotonic() - t0:.2f}s)",
            flush=True,
        )

    loss, acc = evaluate(p, x, y)
    write_atomic(os.path.join(OUTPUT_DIR, "model.npz"), lambda f: np.savez(f, **p))
    result = {
        "loss": loss,
        "accuracy": acc,
        "epochs": epochs,
        "resumedFromEpoch": resumed_from_epoch,
        "resumedFromStep": resumed_from_step,
        "attempt": ATTEMPT,
        "seed": seed,
        "learningRate": lr,
    }
    with open(os.path.join(OUTPUT_DIR, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    print(f"train: done, loss={loss:.4f} accuracy={acc:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
