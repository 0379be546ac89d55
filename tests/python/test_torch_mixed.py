"""adampi.torch with bfloat16 and float16 models, gradient scale and clipping, under mpirun at 1, 2
and 3 ranks (ctest: torch_mixed_np1, torch_mixed_np2, torch_mixed_np3).

The reference is PyTorch's usual recipe (SPEC.md, "Mixed precision, gradient scale and clipping"):
fp32 master weights under the official optimizer (or the project's transcription, see conftest.py),
the mean gradient in fp32 divided by the gradient scale, torch.nn.utils.clip_grad_norm_, the step,
and the model's parameters the master rounded to the model's dtype. Every test runs on every rank
in the same order; each failure a test expects must be raised on every rank with the same message,
and must change nothing."""
import copy
import math
import os
import tempfile

import pytest
import torch
from mpi4py import MPI

import adampi
from adampi.torch import SGDP, AdamP, LossScaler, round_to, widen
from test_torch import KINDS, bits, expect_everywhere, groups_of, model, orthogonal_gradient, same_on_every_rank

WORLD = MPI.COMM_WORLD
P, RANK = WORLD.Get_size(), WORLD.Get_rank()
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def grid_gradient(p, seed, kind):
    """A mean gradient k * q (integers |k| <= 128, q a power of two per tensor): plain random, or
    orthogonal to w per channel or as a whole before rounding to the grid (so the projection
    decisions are far from their thresholds). Returns (k, q)."""
    g = orthogonal_gradient(p, seed, kind)
    q = 2.0 ** (math.ceil(math.log2(g.abs().max().item())) - 7)
    return torch.round(g / q), q


def share(k, q, seed, dtype):
    """This rank's share of the mean gradient k * q, in dtype: integers |k + d| <= 192 (exact in
    bfloat16 and float16) that add up to P * k, so the mean over the ranks is exactly k * q."""
    if P == 1:
        return (k * q).to(dtype)
    gen = torch.Generator().manual_seed(1000 + seed)
    d = torch.randint(-32, 33, (P,) + tuple(k.shape), generator=gen).double()
    d[0] -= d.sum(0)
    return ((k + d[RANK]) * q).to(dtype)


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


def ordered(m):
    """The parameters in the optimizer's order under groups_of (master_params, state dict indices)."""
    return [p for g in groups_of(m) for p in g["params"]]


def make(cls, groups, comm=None, **kw):
    return cls(groups, comm=comm, **kw) if comm is not None else cls(groups, **kw)


# (optimizer, nesterov, dtype, max_grad_norm, where the master starts: the fp32 model or the 16-bit params)
CASES = [("adamp", False, "bf16", 1.0, "fp32"), ("adamp", True, "fp16", 0.0, "params"),
         ("sgdp", True, "bf16", 1e3, "params"), ("sgdp", False, "fp16", 1.0, "fp32"),
         ("adamp", False, "bf16", 0.0, "params"), ("sgdp", False, "bf16", 1.0, "params")]
SCALES = [1.0, 1024.0, 3.0, 1.0, 0.25, 3.0]  # the gradient scale of each step: powers of two and 3


@pytest.mark.parametrize("opt_name,nesterov,dt,max_norm,init", CASES)
def test_steps_match_the_fp32_master_recipe_and_do_not_depend_on_ranks(ref, opt_name, nesterov, dt, max_norm, init):
    dtype = DTYPES[dt]
    m32 = model(21)
    m_ours, m_one = copy.deepcopy(m32).to(dtype), copy.deepcopy(m32).to(dtype)
    m_ref = copy.deepcopy(m32) if init == "fp32" else copy.deepcopy(m_ours).float()  # the reference master
    extra = dict(max_grad_norm=max_norm)
    if init == "fp32":
        extra["master_params"] = ordered(m32)
    if opt_name == "adamp":
        kw, cls, ref_cls = dict(lr=1e-2, nesterov=nesterov), AdamP, ref.AdamP
    else:
        kw, cls, ref_cls = dict(lr=0.1, momentum=0.9, nesterov=nesterov), SGDP, ref.SGDP
    o_ref = ref_cls(groups_of(m_ref), **kw)
    o_ours = make(cls, groups_of(m_ours), **kw, **extra)
    o_one = make(cls, groups_of(m_one), MPI.COMM_SELF, **kw, **extra)
    assert o_ours.dtype == dtype and all(p.dtype == dtype for p in m_ours.parameters())
    if init == "fp32":  # the parameters are the fp32 values rounded
        assert all(torch.equal(p.detach(), q.detach().to(dtype)) for p, q in zip(ordered(m_ours), ordered(m32)))
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (o_ref, o_ours, o_one)]
    params = [ordered(m) for m in (m_ref, m_ours, m_one)]
    worst, clipped = 0.0, 0
    for step, scale in enumerate(SCALES):
        for i, (pr, po, p1) in enumerate(zip(*params)):
            if (step == 2 and i == 3) or (step == 4 and i == 0):  # no gradient at this step
                pr.grad = po.grad = p1.grad = None
                continue
            k, q = grid_gradient(pr, 100 * step + i, KINDS[i % len(KINDS)])
            if scale == 3.0:  # three accumulated micro-batches: the sum is given, the mean is wanted
                pr.grad = (k * q).float() / 3.0
                po.grad, p1.grad = share(k, q, 100 * step + i, dtype), (k * q).to(dtype)
            else:
                pr.grad = (k * q).float()
                po.grad = share(k, q * scale, 100 * step + i, dtype)
                p1.grad = (k * q * scale).to(dtype)
        with_grad = [p for p in params[0] if p.grad is not None]
        total = math.inf
        if max_norm > 0:
            total = float(torch.nn.utils.clip_grad_norm_(with_grad, max_norm))
        o_ref.step()
        o_ours.step(grad_scale=scale)
        o_one.step(grad_scale=scale)
        for s in scheds:
            s.step()
        info = o_ours.last_step
        assert info.applied and not info.skipped and info.nonfinite is None
        assert o_one.last_step == info or P > 1 and abs(o_one.last_step.grad_norm - info.grad_norm) <= 1e-12 * info.grad_norm
        if max_norm > 0:
            assert abs(info.grad_norm - total) <= 1e-5 * total, (info.grad_norm, total)
            coef = min(1.0, max_norm / (total + 1e-6))
            assert abs(info.clip_coef - coef) <= 1e-5 * coef, (info.clip_coef, coef)
            clipped += info.clip_coef < 1.0
        else:
            assert info.clip_coef == 1.0
        masters = o_ours.master_params()
        for i, (pr, mo, po) in enumerate(zip(params[0], masters, params[1])):
            err = rel_err(mo, pr)
            worst = max(worst, err)
            assert err <= 2e-6, "step %d tensor %d: master's relative error %.3g against the reference" % (step, i, err)
            assert torch.equal(po.detach(), mo.to(dtype)), "step %d tensor %d: parameter is not the master rounded" % (
                step, i)
        assert bits(params[1]) == bits(params[2]), "step %d: %d ranks and 1 rank differ" % (step, P)
        assert bits(masters) == bits(o_one.master_params()), "step %d: masters of %d ranks and 1 rank differ" % (step, P)
        assert same_on_every_rank(params[1]) and same_on_every_rank(masters)
    assert clipped == (len(SCALES) if max_norm == 1.0 else 0)
    if RANK == 0:
        print("\n%s %s nesterov=%s max_grad_norm=%g master from %s: max relative error of the master %.3g"
              % (opt_name, dt, nesterov, max_norm, init, worst))
    for o in (o_ours, o_one):
        o.close()


# ---- rounding: the core's adampi_round_to against torch's .bfloat16() / .half() ----------------

def _f32(words):
    return torch.tensor(words, dtype=torch.int64).to(torch.int32).view(torch.float32)


SPECIAL_BITS = [
    0x00000000, 0x80000000,                          # +0, -0
    0x00000001, 0x80000001, 0x007fffff, 0x00400000,  # fp32 subnormals
    0x00800000, 0x80800000,                          # fp32 min normal
    0x33800000, 0x33000000, 0x33400000, 0x33c00000,  # 2^-24 (fp16 min subnormal), 2^-25 (tie to 0), 1.5*2^-25, 1.5*2^-24
    0x387fc000, 0x38800000, 0x387fe000, 0x387ff000,  # around fp16's min normal 2^-14, ties
    0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff,  # bfloat16 ties to even (down, up), just above, just below
    0x3f801000, 0x3f803000, 0x3f801001,              # float16 ties to even, just above
    0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001,  # 65504 (fp16 max), below the tie, the tie to Inf, above
    0xc77ff000, 0x47800000,                          # -65520 -> -Inf, 65536
    0x7f7fffff, 0xff7fffff, 0x7f7f7fff, 0x7f7f8000,  # fp32 max (bfloat16: Inf), below and at bfloat16's top tie
    0x7f800000, 0xff800000,                          # +-Inf
    0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff,  # quiet and signalling NaNs
]


def _same_rounding(x, dtype):
    ours, theirs = round_to(x, dtype), x.to(dtype)
    nan = torch.isnan(theirs)
    assert torch.equal(torch.isnan(ours), nan), "NaN where torch has none, or the reverse"
    a, b = ours.view(torch.int16)[~nan], theirs.view(torch.int16)[~nan]
    bad = (a != b).nonzero()
    assert bad.numel() == 0, "%s: %d values differ, first %s: ours 0x%04x, torch 0x%04x" % (
        dtype, bad.numel(), x[~nan][bad[0]].item(), a[bad[0]].item() & 0xffff, b[bad[0]].item() & 0xffff)
    # widening is exact: torch's .float() bit for bit
    w, t = widen(theirs)[~nan], theirs.float()[~nan]
    assert torch.equal(w.view(torch.int32), t.view(torch.int32))


@pytest.mark.parametrize("dt", ["bf16", "fp16"])
def test_rounding_is_torchs_bit_for_bit(dt):
    dtype = DTYPES[dt]
    _same_rounding(_f32(SPECIAL_BITS), dtype)
    gen = torch.Generator().manual_seed(7 + RANK)
    words = torch.randint(-2 ** 31, 2 ** 31, (1_000_000,), generator=gen, dtype=torch.int64)
    x = words.to(torch.int32).view(torch.float32)  # every exponent, subnormals, Inf and NaN included
    _same_rounding(x, dtype)
    assert torch.equal(round_to(x[:99], torch.float32).view(torch.int32), x[:99].view(torch.int32))  # a copy


# ---- non-finite steps -----------------------------------------------------------------------------

def feed(m, seed, dtype, scale=1.0):
    for i, p in enumerate(m.parameters()):
        k, q = grid_gradient(p, seed + i, KINDS[i % len(KINDS)])
        p.grad = share(k, q * scale, seed + i, dtype)


def test_float16_overflow_skips_everywhere_or_raises():
    m = model(30).half()
    o = AdamP(m.parameters(), lr=1e-2, nonfinite="skip", max_grad_norm=1.0)
    feed(m, 0, torch.float16)
    o.step()
    before, master, state = bits(m.parameters()), bits(o.master_params()), o.state_dict()
    feed(m, 10, torch.float16)
    if RANK == P - 1:  # a backward pass that overflowed float16 on one rank
        list(m.parameters())[3].grad[0, 0] = torch.tensor(70000.0).half()
        assert math.isinf(list(m.parameters())[3].grad[0, 0].item())
    o.step(grad_scale=4.0)
    info = o.last_step
    assert info.skipped and not info.applied and info.nonfinite == "param3"
    assert o.steps_skipped == 1 and o.steps_taken == 1
    assert bits(m.parameters()) == before and bits(o.master_params()) == master
    after = o.state_dict()
    for i, entry in state["state"].items():
        assert all(torch.equal(after["state"][i][k], v) if torch.is_tensor(v) else after["state"][i][k] == v
                   for k, v in entry.items())
    o.close()
    m = model(30).half()
    o = SGDP(m.parameters(), lr=0.1, momentum=0.9)  # the error policy
    feed(m, 0, torch.float16)
    o.step()
    before, master = bits(m.parameters()), bits(o.master_params())
    feed(m, 10, torch.float16)
    if RANK == 0:
        list(m.parameters())[0].grad[0, 0, 0, 0] = float("inf")
    expect_everywhere(adampi.NonFiniteError, o.step, "param0")
    assert not o.last_step.applied and not o.last_step.skipped
    assert bits(m.parameters()) == before and bits(o.master_params()) == master
    o.close()


def test_loss_scaler_rules_and_steps():
    s = LossScaler(growth_interval=3)
    assert s.get_scale() == 65536.0
    for skipped, want in [(False, 65536.0), (False, 65536.0), (False, 131072.0), (True, 65536.0), (False, 65536.0),
                          (True, 32768.0), (False, 32768.0), (False, 32768.0), (False, 65536.0)]:
        s.update(skipped)
        assert s.get_scale() == want, (skipped, s.get_scale(), want)
    assert s.scale(torch.tensor(2.0)).item() == 131072.0
    s2 = LossScaler()
    s2.load_state_dict(s.state_dict())
    assert s2.state_dict() == s.state_dict()
    with pytest.raises(ValueError, match="backoff_factor"):
        LossScaler(backoff_factor=0.0)
    # float16 gradients scaled by 2^16 overflow: skipped steps halve the scale until one fits, and
    # the step that is applied is the unscaled one, bit for bit (power-of-two scales are exact).
    m, m_plain = model(31).half(), model(31).half()
    o = AdamP(m.parameters(), lr=1e-2, nonfinite="skip")
    o_plain = AdamP(m_plain.parameters(), lr=1e-2)
    scaler, scales = LossScaler(), []
    with pytest.raises(ValueError, match="nonfinite='skip'"):
        scaler.step(o_plain)
    while True:
        scales.append(scaler.get_scale())
        feed(m, 40, torch.float16, scaler.get_scale())  # what backward of scaler.scale(loss) gives
        scaler.step(o)
        if o.last_step.applied:
            break
        assert o.last_step.skipped and len(scales) < 10
    assert len(scales) > 1 and scaler.get_scale() == scales[-1] and scales == [65536.0 / 2 ** j for j in range(len(scales))]
    feed(m_plain, 40, torch.float16)
    o_plain.step()
    assert bits(m.parameters()) == bits(m_plain.parameters())
    assert o.steps_skipped == len(scales) - 1 and o.steps_taken == 1
    o.close()
    o_plain.close()


def test_reduce_gradients_false_with_bfloat16():
    """Averaged gradients given (as after DDP): the sharded step, then the master gathered and rounded."""
    m, m1 = model(36).to(torch.bfloat16), model(36).to(torch.bfloat16)
    o = SGDP(m.parameters(), lr=0.1, momentum=0.9, reduce_gradients=False, max_grad_norm=1.0)
    o1 = SGDP(m1.parameters(), lr=0.1, momentum=0.9, comm=MPI.COMM_SELF, max_grad_norm=1.0)
    for s in range(3):
        for i, (a, b) in enumerate(zip(m.parameters(), m1.parameters())):
            k, q = grid_gradient(a, 30 * s + i, KINDS[i % len(KINDS)])
            a.grad, b.grad = (k * q).to(torch.bfloat16), (k * q).to(torch.bfloat16)
        o.step(grad_scale=2.0)
        o1.step(grad_scale=2.0)
        assert bits(m.parameters()) == bits(m1.parameters()) and same_on_every_rank(list(m.parameters()))
        assert bits(o.master_params()) == bits(o1.master_params())
    o.close()
    o1.close()


# ---- state ----------------------------------------------------------------------------------------

def test_bfloat16_state_dict_resumes_bitwise():
    m = model(32).to(torch.bfloat16)
    o = AdamP(groups_of(m), lr=1e-2, max_grad_norm=1.0, nesterov=True)
    for s in range(3):
        feed(m, 10 * s, torch.bfloat16)
        o.step()
    sd = o.state_dict()
    assert sd["adampi"]["dtype"] == "bfloat16" and set(sd["adampi"]["master"]) == set(range(8))
    masters = sd["adampi"]["master"]
    assert all(masters[i].dtype == torch.float32 for i in masters)
    # The master carries what the parameters lost: resuming from the parameters alone would differ.
    assert any(not torch.equal(masters[i], p.detach().float()) for i, p in enumerate(ordered(m)))
    m2 = copy.deepcopy(m)
    o2 = AdamP(groups_of(m2), lr=0.3, max_grad_norm=1.0)
    feed(m2, 99, torch.bfloat16)
    o2.step()  # a master of its own, which load_state_dict must replace
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["lr"] == 1e-2 and o2.param_groups[0]["nesterov"] is True
    assert bits(m2.parameters()) == bits(m.parameters())
    for s in range(3, 6):
        feed(m, 10 * s, torch.bfloat16)
        feed(m2, 10 * s, torch.bfloat16)
        o.step(grad_scale=2.0 if s == 4 else 1.0)
        o2.step(grad_scale=2.0 if s == 4 else 1.0)
        assert bits(m.parameters()) == bits(m2.parameters()), "step %d" % s
        assert bits(o.master_params()) == bits(o2.master_params())
    # A state dict without master weights: the master restarts from the parameters.
    plain = copy.deepcopy(o.state_dict())
    del plain["adampi"]["master"]
    o2.load_state_dict(plain)
    assert bits(o2.master_params()) == bits([p.detach().float() for p in ordered(m2)])
    # A NaN in the master weights: refused everywhere, nothing changed.
    bad = copy.deepcopy(sd)
    bad["adampi"]["master"][5][0] = float("nan")
    before, master = bits(m2.parameters()), bits(o2.master_params())
    expect_everywhere(adampi.NonFiniteError, lambda: o2.load_state_dict(bad), "master", "param5")
    assert bits(m2.parameters()) == before and bits(o2.master_params()) == master
    # The fp32 state dict keeps the official format: no master, no dtype.
    m3 = model(32)
    o3 = AdamP(groups_of(m3))
    assert set(o3.state_dict()["adampi"]) == {"steps_taken", "steps_skipped", "names"}
    o3.load_state_dict(sd)  # a float32 model takes a 16-bit run's master as its parameters
    assert bits(ordered(m3)) == bits([masters[i] for i in range(8)])
    for x in (o, o2, o3):
        x.close()


def test_set_master():
    m32 = model(33)
    m = copy.deepcopy(m32).half()
    o = SGDP(m.parameters(), lr=0.1)
    named = dict(m32.named_parameters())
    o.set_master(list(m32.parameters()))
    assert bits(o.master_params()) == bits(m32.parameters())
    assert all(torch.equal(p.detach(), q.detach().half()) for p, q in zip(m.parameters(), m32.parameters()))
    before, master = bits(m.parameters()), bits(o.master_params())
    expect_everywhere(ValueError, lambda: o.set_master(list(m32.parameters())[:-1]), "7 master values for 8")
    wrong = list(m32.parameters())
    wrong[2] = torch.zeros(3)
    expect_everywhere(ValueError, lambda: o.set_master(wrong), "parameter 2")
    nan = [p.detach().clone() for p in m32.parameters()]
    nan[4][1] = float("inf")
    expect_everywhere(adampi.NonFiniteError, lambda: o.set_master(nan), "param4")
    assert bits(m.parameters()) == before and bits(o.master_params()) == master
    o.close()
    m3 = model(33).half()
    o3 = SGDP(list(m3.named_parameters()), lr=0.1, master_params=named)  # by name
    assert bits(o3.master_params()) == bits(m32.parameters())
    o3.close()


# ---- bad input --------------------------------------------------------------------------------------

def test_bad_dtypes_norms_and_scales_raise_everywhere():
    a, b = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16)), torch.nn.Parameter(torch.zeros(2))
    expect_everywhere(ValueError, lambda: AdamP([a, b]), "mixed dtypes", "bfloat16", "float32")
    # Mixed on one rank only: every rank raises, naming it.
    ps = [a, b] if RANK == P - 1 else [a, torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))]
    msg = expect_everywhere(ValueError, lambda: AdamP(ps), "mixed dtypes")
    assert P == 1 or msg.startswith("rank %d: " % (P - 1))
    if P > 1:  # one dtype per rank, but not the same on every rank: the core's registration check
        c = torch.nn.Parameter(torch.zeros(3, dtype=torch.float16 if RANK == 0 else torch.bfloat16))
        expect_everywhere(adampi.MismatchError, lambda: AdamP([c]))
    for bad in (-1.0, float("nan"), float("inf"), "1"):
        expect_everywhere(ValueError, lambda: AdamP(model().parameters(), max_grad_norm=bad), "max_grad_norm", repr(bad))
    m = model(34).to(torch.bfloat16)
    o = AdamP(m.parameters(), lr=1e-2, max_grad_norm=2.0)
    feed(m, 0, torch.bfloat16)
    o.step()
    before, master, taken = bits(m.parameters()), bits(o.master_params()), o.steps_taken
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="max_grad_norm"):
            o.max_grad_norm = bad
        assert o.max_grad_norm == 2.0
    for bad in (0.0, -2.0, float("nan"), float("inf"), None):
        feed(m, 10, torch.bfloat16)
        expect_everywhere(ValueError, lambda: o.step(grad_scale=bad), "grad_scale = %r" % (bad,))
    # A bad scale on one rank only.
    feed(m, 10, torch.bfloat16)
    msg = expect_everywhere(ValueError, lambda: o.step(grad_scale=0.0 if RANK == P - 1 else 1.0), "grad_scale = 0.0")
    assert P == 1 or msg.startswith("rank %d: " % (P - 1))
    if P > 1:  # valid scales that differ across ranks
        expect_everywhere(adampi.MismatchError, lambda: o.step(grad_scale=1.0 + RANK), "grad_scale")
        o.max_grad_norm = 1.0 + RANK  # valid, but not the same everywhere
        expect_everywhere(adampi.MismatchError, o.step, "max_grad_norm")
    assert bits(m.parameters()) == before and bits(o.master_params()) == master and o.steps_taken == taken
    o.max_grad_norm = 0.0
    o.step()
    assert o.last_step.applied and o.last_step.clip_coef == 1.0
    o.close()


# ---- checkpoints of 16-bit models (the core's adampi_save / adampi_load, branch ckpt) -----------

def _core_saves_16_bit():
    """Whether the core's checkpoints handle 16-bit handles (adampi.h's contract; issue 14's
    checkpoint part may not be merged yet). Probed on 2 elements in node-shared pages, where an old
    core reading floats from the 16-bit buffer stays inside the page; every rank agrees."""
    ok = True
    d = tempfile.mkdtemp(prefix="adampi-probe-")
    try:
        p = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
        o = AdamP([p], comm=MPI.COMM_SELF, master_params=[torch.tensor([1.1, -2.3])])
        if not o.uses_shared_buffers:
            o.close()
            return False
        o.save(os.path.join(d, "p.h5"))
        o.close()
        q = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
        o = AdamP([q], comm=MPI.COMM_SELF)
        o.load(os.path.join(d, "p.h5"))
        ok = bits(o.master_params()) == bits([torch.tensor([1.1, -2.3])])
        o.close()
    except adampi.AdampiError:
        ok = False
    finally:
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        os.rmdir(d)
    return WORLD.allreduce(int(ok), op=MPI.MIN) == 1


def test_bfloat16_checkpoint_save_and_load_on_other_rank_counts():
    if not _core_saves_16_bit():
        pytest.skip("the core's adampi_save/adampi_load do not handle 16-bit handles yet (issue 14, branch ckpt)")
    m = model(35).to(torch.bfloat16)
    o = AdamP(groups_of(m), lr=1e-2, max_grad_norm=1.0)
    for s in range(3):
        feed(m, 20 * s, torch.bfloat16)
        o.step()
    path = WORLD.bcast(tempfile.mkdtemp(prefix="adampi-torch-mixed-") if RANK == 0 else None)
    ck = os.path.join(path, "ck.h5")
    o.save(ck, user={"epoch": 3})
    master = bits(o.master_params())
    for comm in (MPI.COMM_SELF, WORLD.Split(RANK % 2, RANK)):
        m2 = model(99).to(torch.bfloat16)
        o2 = AdamP(groups_of(m2), lr=0.5, comm=comm, max_grad_norm=1.0)
        assert o2.load(ck) == {"epoch": 3}
        assert bits(o2.master_params()) == master and bits(m2.parameters()) == bits(m.parameters())
        o2.close()
    m3 = model(99)
    o3 = AdamP(groups_of(m3), comm=MPI.COMM_SELF)  # float32 from a bfloat16 checkpoint: the master
    o3.load(ck)
    assert bits(ordered(m3)) == master
    o3.close()
    o.close()
