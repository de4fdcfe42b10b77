"""A long-lived PyTorch step server, so that benchmarks/benchmark.py can alternate its own steps
with this reference's in one run (`python benchmarks/benchmark.py --torch`).

    python worker.py --config=base_fh --modes=eager,bf16

Builds one model and AdamW per mode (same seed, the batch of data.make_batch), runs --warmup
steps of each, prints "ready", then answers every stdin line "MODE STEPS" with one JSON line
{"mode", "step_s": [...], "loss"}. The step is bench.py's: draw the randomness, forward (under
bf16 autocast in mode "bf16"), the four losses, backward, clip 5, AdamW.
"""

import argparse
import json
import sys
import time

import torch
from data import make_batch
from model import CONFIGS, MoleBlend, sample_randomness


def make_step(config, batch, mode, seed):
    """-> (one training step of a fresh model in `mode`: eager, bf16 or compile, its params)."""
    torch.manual_seed(seed)
    model = MoleBlend(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    fwd = torch.compile(model) if mode == "compile" else model

    def step():
        rnd = sample_randomness(config, batch["mask"])
        # mode "bf16": eager under CPU autocast (AVX512-BF16 matmuls where the CPU has them).
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            loss, _ = fwd(batch, rnd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return loss.item()

    return step, sum(p.numel() for p in model.parameters())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="tiny_fh")
    p.add_argument("--modes", default="eager,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--atoms", type=int, default=32)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    config = CONFIGS[a.config]
    data = make_batch(a.seed, a.batch, a.atoms)
    batch = {k: torch.from_numpy(v) for k, v in data.items()}
    steps, params = {}, 0
    for mode in a.modes.split(","):
        steps[mode], params = make_step(config, batch, mode, a.seed)
        for _ in range(a.warmup):
            steps[mode]()
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": params}
    print(json.dumps({"ready": True, **info}), flush=True)
    for line in sys.stdin:
        mode, count = line.split()
        durations, loss = [], None
        for _ in range(int(count)):
            start = time.perf_counter()
            loss = steps[mode]()
            durations.append(time.perf_counter() - start)
        print(json.dumps({"mode": mode, "step_s": durations, "loss": loss}), flush=True)


if __name__ == "__main__":
    main()
