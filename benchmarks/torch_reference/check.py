"""Sanity checks of the reference model (tiny config, eval mode so dropout is off).

TORCH_VENV/bin/python check.py
"""

import torch
import torch.nn.functional as F
from data import make_batch
from model import CONFIGS, MoleBlend, sample_randomness

torch.manual_seed(0)
c = CONFIGS["tiny"]
model = MoleBlend(c)
batch = {k: torch.from_numpy(v) for k, v in make_batch(1, batch=8, atoms=32).items()}
rnd = sample_randomness(c, batch["mask"])


def losses(b, r, train=False):
    model.train(train)
    with torch.no_grad():
        return {k: v.item() for k, v in model(b, r)[1].items()}


def close(a, b, tol=1e-4):
    return all(abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])) for k in a)


base = losses(batch, rnd)

# 1. Training mode: finite loss and gradients.
model.train()
loss, _ = model(batch, rnd)
loss.backward()
assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
model.zero_grad()

# 2. Rigid motion of coordinates and noise. The 2D losses are invariant. The denoising head is
#    equivariant only when its three per-axis Linear(D->1) share one weight and have no bias: with
#    separate per-axis weights (SPEC 5, as in Transformer-M) out'_a = w_a . sum_b R_ab X_b is not
#    sum_b R_ab (w_b . X_b). The 3D relation loss is frame-dependent by design (SPEC 5).
R, _ = torch.linalg.qr(torch.randn(3, 3))
moved = dict(
    batch, pos=(batch["pos"] @ R.T + torch.tensor([1.0, -2.0, 3.0])) * batch["mask"][..., None]
)
rot = dict(rnd, noise=rnd["noise"] @ R.T)
got = losses(moved, rot)
assert close({k: base[k] for k in ("spd", "edge")}, {k: got[k] for k in ("spd", "edge")}), (
    base,
    got,
)
untied_gap = abs(got["denoise"] - base["denoise"])
saved = [(l.weight.clone(), l.bias.clone()) for l in model.head_noise.axis]
with torch.no_grad():
    for l in model.head_noise.axis:
        l.weight.copy_(model.head_noise.axis[0].weight)
        l.bias.zero_()
tied = losses(batch, rnd)["denoise"], losses(moved, rot)["denoise"]
assert abs(tied[0] - tied[1]) < 1e-4, tied
with torch.no_grad():
    for l, (w, b) in zip(model.head_noise.axis, saved, strict=False):
        l.weight.copy_(w)
        l.bias.copy_(b)
print(
    f"denoise loss change under rotation: per-axis Linears {untied_gap:.4f}, tied {abs(tied[0] - tied[1]):.1e}"
)

# 3. Extra padding (N 32 -> 40) changes nothing.
pad = 8
big = {
    "atom": F.pad(batch["atom"], (0, 0, 0, pad)),
    "spd": F.pad(batch["spd"], (0, pad, 0, pad)),
    "path": F.pad(batch["path"], (0, 0, 0, 0, 0, pad, 0, pad), value=-1),
    "pos": F.pad(batch["pos"], (0, 0, 0, pad)),
    "mask": F.pad(batch["mask"], (0, pad)),
}
big_rnd = {
    "blend": F.pad(rnd["blend"], (0, pad, 0, pad), value=2),
    "node3d": F.pad(rnd["node3d"], (0, pad)),
    "noise": F.pad(rnd["noise"], (0, 0, 0, pad)),
}
assert close(base, losses(big, big_rnd)), (base, losses(big, big_rnd))

# 4. Blend semantics: with every pair shown as SPD and every atom given its degree embedding,
#    the coordinates reach the encoder nowhere, so the SPD and edge losses ignore them.
r2d = dict(rnd, blend=torch.zeros_like(rnd["blend"]), node3d=torch.zeros_like(rnd["node3d"]))
a = losses(batch, r2d)
b = losses(dict(batch, pos=torch.randn_like(batch["pos"]) * batch["mask"][..., None]), r2d)
assert close({k: a[k] for k in ("spd", "edge")}, {k: b[k] for k in ("spd", "edge")}), (a, b)

# 5. Factored pair heads give the same losses as the materialised outer product.
fh = MoleBlend(CONFIGS["tiny_fh"])
fh.load_state_dict(model.state_dict())
fh.eval()
with torch.no_grad():
    got = {k: v.item() for k, v in fh(batch, rnd)[1].items()}
assert close(base, got), (base, got)

# 6. Blend-mask proportions close to (0.2, 0.2, 0.6).
m = sample_randomness(c, torch.ones(1, 256, dtype=torch.bool))["blend"]
frac = [(m == i).float().mean().item() for i in range(3)]
assert all(abs(f - p) < 0.01 for f, p in zip(frac, c.blend_p, strict=False)), frac

print("all checks passed; eval losses:", {k: round(v, 4) for k, v in base.items()})
