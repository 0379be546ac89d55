"""adampi-replay --dtype/--clip-norm/--grad-scale against what a PyTorch user gets (ctest:
mixed_reference). Not run under mpirun itself: each case writes a replay file with h5py, runs the
tool under mpirun on 1 and 3 ranks, and compares OUT (the fp32 master) with PyTorch's recipe
(MATHS.md "Mixed precision"): the file's gradients rounded to the model's type
(g.bfloat16().float(), g.half().float()), divided by the scale, torch.nn.utils.clip_grad_norm_ over
the tensors with a gradient, then the reference step on fp32 weights, the official adamp 0.3.0
where conftest.py finds it, else tests/reference/adamp_ref.py. Tolerance: 2e-6 relative per
tensor (||x - y|| / ||y||), as test_reference; the 1- and 3-rank OUT files must be bitwise equal.

Environment: ADAMPI_REPLAY (the tool), MPIEXEC (default mpirun)."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest
import torch

REPLAY = os.environ.get("ADAMPI_REPLAY")
MPIEXEC = os.environ.get("MPIEXEC", "mpirun")
TOLERANCE = 2e-6
TORCH_TYPE = {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FLOAT_HPARAMS = ("lr", "beta1", "beta2", "eps", "weight_decay", "delta", "wd_ratio", "momentum", "dampening")

# (shape, group): group 0 holds the weights (weight decay), group 1 biases and scalars
TENSORS = [((6, 4, 3, 3), 0), ((12, 20), 0), ((12,), 1), ((), 1), ((5, 40), 0), ((1, 30), 0), ((7,), 1)]

# name, optimizer, dtype, grad scale, clip ("mid": between the step norms, so some steps are
# clipped and some not; 0: off), hyper-parameters of the two groups
CASES = [
    ("adamp_bf16_clip", "adamp", "bf16", 256.0, "mid",
     [dict(lr=1e-2, weight_decay=1e-2), dict(lr=5e-3, beta1=0.8, beta2=0.99)]),
    ("adamp_fp16_nesterov_clip", "adamp", "fp16", 1024.0, "mid",
     [dict(lr=1e-2, weight_decay=1e-2, nesterov=1), dict(lr=2e-3, nesterov=1)]),
    ("sgdp_bf16_nesterov_clip", "sgdp", "bf16", 1.0, "mid",
     [dict(lr=0.05, momentum=0.9, nesterov=1, weight_decay=1e-3), dict(lr=0.02, momentum=0.5, nesterov=1)]),
    ("sgdp_fp16_dampening_noclip", "sgdp", "fp16", 8.0, 0.0,
     [dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3), dict(lr=0.02, momentum=0.5)]),
    ("adamp_bf16_odd_scale", "adamp", "bf16", 3.0, 0.0,  # divided by; the powers of two multiply
     [dict(lr=1e-2, weight_decay=1e-2), dict(lr=5e-3, nesterov=1)]),
    ("adamp_float32_clip_scale", "adamp", "float32", 4.0, "mid",
     [dict(lr=1e-2, weight_decay=1e-2), dict(lr=5e-3)]),
]
STEPS = 12

worst_seen = [0.0]


def hparams(optimizer, h):
    d = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, delta=0.1, wd_ratio=0.1,
             momentum=0.0, dampening=0.0, nesterov=0)
    d.update(h)
    return d


def make_trajectory(seed, scale):
    """Initial weights, the file's gradients (None: no gradient at that step) and a schedule.
    Gradients are of three kinds, cycling: correlated with w (cosines far above the projection's
    threshold), orthogonal to every row (channel view), orthogonal to the whole tensor (layer
    view), so that every decision is far from its threshold and stays the same in fp32 and in
    the reference; times the loss scale, as a scaled backward pass makes them."""
    rng = np.random.default_rng(seed)
    init = [np.asarray(rng.standard_normal(s) * 0.5, dtype=np.float32) for s, _ in TENSORS]
    w = [x.astype(np.float64) for x in init]  # only to shape the gradients: any w near the path works
    grads = []
    for t in range(STEPS):
        step = []
        for i, (shape, _) in enumerate(TENSORS):
            if t > 0 and rng.random() < 0.2:
                step.append(None)
                continue
            g = np.asarray(rng.standard_normal(shape) * 0.05)
            kind = (t + i) % 3
            if len(shape) > 1 and kind == 1:
                gv, wv = g.reshape(shape[0], -1), w[i].reshape(shape[0], -1)
                gv -= (gv * wv).sum(1, keepdims=True) / (wv * wv).sum(1, keepdims=True) * wv
            elif len(shape) > 1 and kind == 2 and shape[0] > 1:
                g -= (g * w[i]).sum() / (w[i] * w[i]).sum() * w[i]
            else:
                g += 0.05 * w[i]
            step.append(np.asarray(g * scale, dtype=np.float32))
        grads.append(step)
    lr_factor = np.array([1.0 + 0.1 * t for t in range(STEPS)])
    return init, grads, lr_factor


def write_replay(path, optimizer, groups, init, grads, schedule):
    def put(obj, attrs):
        for k, v in attrs.items():
            obj.attrs[k] = np.bytes_(v) if isinstance(v, str) else np.int64(v) if isinstance(v, int) else np.float64(v)
    with h5py.File(path, "w") as f:
        put(f, dict(optimizer=optimizer, steps=STEPS))
        for g, h in enumerate(groups):
            put(f.create_group(f"groups/{g}"), dict({k: float(h[k]) for k in FLOAT_HPARAMS}, nesterov=int(h["nesterov"])))
        f.create_group("params")
        for i, (w, (_, group)) in enumerate(zip(init, TENSORS)):
            put(f.create_dataset(f"params/{i}", data=w), dict(group=group))
        f.create_group("grads")
        for t, step in enumerate(grads):
            grp = f.create_group(f"grads/{t}")
            for i, g in enumerate(step):
                if g is not None:
                    grp.create_dataset(str(i), data=g)
        f.create_dataset("lr_schedule", data=np.asarray(schedule, np.float64))


def torch_gradients(grads, dtype, scale):
    """What the model's backward pass hands PyTorch's recipe: the type's gradients, unscaled."""
    return [[None if g is None else torch.from_numpy(g).to(TORCH_TYPE[dtype]).float() / scale for g in step]
            for step in grads]


def reference(ref, optimizer, groups, init, grads, schedule, clip):
    """PyTorch: fp32 master weights, clip_grad_norm_ over the tensors with a gradient, the step."""
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in init]
    pg = []
    for k, h in enumerate(groups):
        members = [p for p, (_, g) in zip(params, TENSORS) if g == k]
        if optimizer == "adamp":
            pg.append(dict(params=members, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                           weight_decay=h["weight_decay"], delta=h["delta"], wd_ratio=h["wd_ratio"],
                           nesterov=bool(h["nesterov"])))
        else:
            pg.append(dict(params=members, lr=h["lr"], momentum=h["momentum"], dampening=h["dampening"],
                           weight_decay=h["weight_decay"], nesterov=bool(h["nesterov"]), eps=h["eps"],
                           delta=h["delta"], wd_ratio=h["wd_ratio"]))
    opt = ref.AdamP(pg) if optimizer == "adamp" else ref.SGDP(pg, lr=groups[0]["lr"])
    clipped = 0
    for t, step in enumerate(grads):
        for p, g in zip(params, step):
            p.grad = None if g is None else g.clone()
        if clip > 0:
            total = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
            clipped += int(clip / (float(total) + 1e-6) < 1.0)
        for k, group in enumerate(opt.param_groups):
            group["lr"] = schedule[t][k]
        opt.step()
    return [p.detach().numpy().copy() for p in params], clipped


def step_norms(grads):
    return [float(torch.sqrt(sum((g.double() ** 2).sum() for g in step if g is not None))) for step in grads]


def run_replay(n, args, out):
    cmd = [MPIEXEC, "-np", str(n), "--oversubscribe", REPLAY] + args + [out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "%s failed:\n%s%s" % (" ".join(cmd), r.stdout, r.stderr)
    return r.stdout


def read_out(path):
    with h5py.File(path, "r") as f:
        return [f[f"params/{i}"][()] for i in range(len(TENSORS))]


@pytest.mark.skipif(not REPLAY or not os.path.exists(REPLAY), reason="ADAMPI_REPLAY is not set to adampi-replay")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_replay_matches_pytorch(case, ref, tmp_path):
    name, optimizer, dtype, scale, clip, hp = case
    groups = [hparams(optimizer, h) for h in hp]
    init, grads, lr_factor = make_trajectory(sum(name.encode()) * 7919 + 17, scale)
    schedule = [[g["lr"] * f for g in groups] for f in lr_factor]
    tg = torch_gradients(grads, dtype, scale)
    if clip == "mid":  # between two middle step norms: some steps clipped, some not
        norms = sorted(step_norms(tg))
        clip = float(np.sqrt(norms[len(norms) // 2 - 1] * norms[len(norms) // 2]))
    want, clipped = reference(ref, optimizer, groups, init, grads=tg, schedule=schedule, clip=clip)
    if clip > 0:
        assert 0 < clipped < STEPS, "the case must clip some steps and not others (clipped %d)" % clipped

    inp = str(tmp_path / "in.h5")
    write_replay(inp, optimizer, groups, init, grads, schedule)
    args = ["--dtype", dtype, "--clip-norm", repr(clip), "--grad-scale", repr(scale), inp]
    outs = {}
    for n in (1, 3):
        out = str(tmp_path / f"out{n}.h5")
        log = run_replay(n, args, out)
        if clip > 0:
            m = re.search(r"clipped at (\d+) steps", log)
            assert m and int(m.group(1)) == clipped, "clipped steps: tool %s, PyTorch %d\n%s" % (m and m.group(1), clipped, log)
        views = re.search(r"channel view (\d+) times, the layer view (\d+) times", log)
        assert views and int(views.group(1)) > 0 and int(views.group(2)) > 0, "both views must project:\n" + log
        outs[n] = read_out(out)
    for a, b in zip(outs[1], outs[3]):
        assert a.tobytes() == b.tobytes(), "1 and 3 ranks give different bits"

    worst = 0.0
    for i, (x, y) in enumerate(zip(outs[1], want)):
        x, y = x.astype(np.float64), y.astype(np.float64)
        den = np.sqrt((y * y).sum())
        err = np.sqrt(((x - y) ** 2).sum()) / (den if den > 0 else 1.0)
        assert err <= TOLERANCE, "%s: tensor %d differs from PyTorch by %.3g (tolerance %g)" % (name, i, err, TOLERANCE)
        worst = max(worst, err)
    # the 16-bit model is not the fp32 one: the rounding of the gradients shows
    if dtype != "float32":
        plain, _ = reference(ref, optimizer, groups, init, torch_gradients(grads, "float32", scale), schedule, clip)
        assert any(not np.array_equal(a, b) for a, b in zip(plain, outs[1])), "rounding the gradients changed nothing"
    worst_seen[0] = max(worst_seen[0], worst)
    print("\n%s: max relative error %.3g against PyTorch (clip %.4g, %d of %d steps clipped; largest so far %.3g)"
          % (name, worst, clip, clipped, STEPS, worst_seen[0]))
