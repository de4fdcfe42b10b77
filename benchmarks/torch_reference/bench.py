"""Training-step throughput of the PyTorch reference: forward + backward + clip + AdamW step.

    TORCH_VENV/bin/python bench.py                       # tiny,base x eager,compile
    TORCH_VENV/bin/python bench.py --configs tiny --modes eager --steps 5

Each (config, mode) runs in its own subprocess (clean peak RSS) and prints one JSON line:
molecules/s = batch / median step time over --steps timed steps after --warmup steps (the first step
of a compiled run includes compilation, reported as first_step_s). One fixed synthetic batch is
reused; the blend mask, node blend and noise are re-drawn every step, as in training.

The machine may be shared, and with 2 threads on 2 cores one busy outside process slows a step
5-15x. So each step records the CPU time other processes used meanwhile (/proc/stat minus this
process); a step is "clean" when they used < 5% of the machine. Before a step, and after any
contaminated one, the run waits for the machine to go idle; it stops at --steps clean steps or after
--max-wait seconds. mol_per_s = batch / median clean step (mol_per_s_all: over all timed steps).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from data import make_batch

NCPU, HZ = os.cpu_count(), os.sysconf("SC_CLK_TCK")


def cpu_ticks():
    """(ticks busy on the whole machine, ticks used by this process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(v) - v[3] - v[4], int(own[11]) + int(own[12])


def others_share(t0, c0, wall):
    """Fraction of the machine other processes used since snapshot c0 taken at time t0."""
    c1 = cpu_ticks()
    return max(0.0, ((c1[0] - c0[0]) - (c1[1] - c0[1])) / (wall * NCPU * HZ))


def wait_idle(limit_s):
    """Sleep until other processes use < 5% of the machine over 1 s; returns seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        t, c = time.perf_counter(), cpu_ticks()
        time.sleep(1.0)
        if others_share(t, c, time.perf_counter() - t) < 0.05:
            break
    return time.perf_counter() - start


from model import CONFIGS
from worker import make_step


def run_one(name, mode, a):
    torch.set_num_threads(a.threads)
    c = CONFIGS[name]
    batch = {k: torch.from_numpy(v) for k, v in make_batch(a.seed, a.batch, a.atoms).items()}
    step, num_params = make_step(c, batch, mode, a.seed)

    t = time.perf_counter()
    losses = [step()]
    first = time.perf_counter() - t
    for _ in range(a.warmup - 1):
        losses.append(step())
    times, clean, waited, start = [], [], 0.0, time.perf_counter()
    last_clean = False
    while len(clean) < a.steps and time.perf_counter() - start < a.max_wait:
        if not last_clean:  # before the first timed step, and after a contaminated one
            waited += wait_idle(a.max_wait - (time.perf_counter() - start))
        t, c0 = time.perf_counter(), cpu_ticks()
        losses.append(step())
        times.append(time.perf_counter() - t)
        last_clean = others_share(t, c0, times[-1]) < 0.05
        if last_clean:
            clean.append(times[-1])
    med = statistics.median(clean or times)
    return {
        "config": name,
        "mode": mode,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "batch": a.batch,
        "atoms_padded": a.atoms,
        "real_atoms": int(batch["mask"].sum()),
        "params": num_params,
        "mol_per_s": round(a.batch / med, 3),
        "median_step_s": round(med, 4),
        "min_step_s": round(min(times), 4),
        "max_step_s": round(max(times), 4),
        "clean_steps": len(clean),
        "mol_per_s_all": round(a.batch / statistics.median(times), 3),
        "waited_idle_s": round(waited, 1),
        "first_step_s": round(first, 2),
        "timed_steps": len(times),
        "warmup_steps": a.warmup,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="tiny,base")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--atoms", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-wait", type=float, default=1800, help="seconds to collect clean steps")
    p.add_argument(
        "--timeout", type=int, default=3600, help="seconds per (config, mode) subprocess"
    )
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: "config:mode"
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(*a.one.split(":"), a)), flush=True)
        return
    passthrough = [
        f"--{k.replace('_', '-')}={getattr(a, k)}"
        for k in ("batch", "atoms", "steps", "warmup", "threads", "seed", "max_wait")
    ]
    for name in a.configs.split(","):
        for mode in a.modes.split(","):
            cmd = [sys.executable, __file__, f"--one={name}:{mode}", *passthrough]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                line = (
                    r.stdout.strip().splitlines()[-1]
                    if r.returncode == 0 and r.stdout.strip()
                    else None
                )
                err = None if line else (r.stderr.strip().splitlines() or ["no output"])[-1]
            except subprocess.TimeoutExpired:
                line, err = None, f"timeout after {a.timeout}s"
            print(line or json.dumps({"config": name, "mode": mode, "error": err}), flush=True)


if __name__ == "__main__":
    main()
