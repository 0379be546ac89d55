"""adampi.torch under mpirun at 1, 2 and 3 ranks (ctest: torch_np1, torch_np2, torch_np3).

Every test runs on every rank in the same order; each failure a test expects must be raised on
every rank with the same message, and must change nothing."""
import copy
import os
import tempfile

import pytest
import torch
from mpi4py import MPI

import adampi
from adampi.torch import SGDP, AdamP

WORLD = MPI.COMM_WORLD
P, RANK = WORLD.Get_size(), WORLD.Get_rank()
GRID = 2.0 ** -12  # gradients on this grid sum exactly, in any order: their mean is exact


def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, bias=False), torch.nn.BatchNorm2d(6), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 4 * 4, 12, bias=False), torch.nn.BatchNorm1d(12), torch.nn.ReLU(),
        torch.nn.Linear(12, 5))


def groups_of(m):
    decay = [p for p in m.parameters() if p.dim() > 1]
    plain = [p for p in m.parameters() if p.dim() <= 1]
    return [{"params": decay, "weight_decay": 1e-2}, {"params": plain, "lr": 5e-3}]


def orthogonal_gradient(p, seed, kind):
    """A float64 gradient: plain random, orthogonal to w per channel (channel projection) or
    orthogonal as a whole (layer projection)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
    w = p.detach().double()
    if kind == "channel" and p.dim() > 1:
        gv, wv = g.reshape(p.shape[0], -1), w.reshape(p.shape[0], -1)
        gv -= (gv * wv).sum(1, keepdim=True) / (wv * wv).sum(1, keepdim=True) * wv
    elif kind == "layer" and p.dim() > 1:
        g -= (g * w).sum() / (w * w).sum() * w
    return g


def mean_gradient(p, seed, kind):
    """orthogonal_gradient rounded to the grid."""
    return (torch.round(orthogonal_gradient(p, seed, kind) / GRID) * GRID).float()


def share(g, seed):
    """This rank's share of mean gradient g: integers on the grid that add up to P * g exactly."""
    if P == 1:
        return g.clone()
    gen = torch.Generator().manual_seed(1000 + seed)
    d = torch.randint(-64, 65, (P,) + tuple(g.shape), generator=gen).float() * GRID
    d[0] -= d.sum(0)
    return g + d[RANK]


def bits(tensors):
    """The tensors' bytes (16-bit tensors through int16, which numpy has)."""
    return b"".join((t.detach().contiguous().view(torch.int16) if t.element_size() == 2 else t.detach().contiguous())
                    .numpy().tobytes() for t in tensors)


def same_on_every_rank(tensors):
    mine = bits(tensors)
    return all(x == mine for x in WORLD.allgather(mine))


def expect_everywhere(exc, fn, *words):
    """fn() raises exc on this rank, with words in the message, and the same message on every rank."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert w in msg, msg
    msgs = WORLD.allgather(msg)
    assert all(m == msgs[0] for m in msgs), msgs
    return msg


# conv.weight, bn.weight, bn.bias, fc.weight, bn.weight, bn.bias, out.weight, out.bias
KINDS = ["channel", "plain", "plain", "layer", "plain", "plain", "channel", "plain"]


@pytest.mark.parametrize("opt_name,nesterov", [("adamp", False), ("adamp", True), ("sgdp", False), ("sgdp", True)])
def test_steps_match_reference_and_do_not_depend_on_ranks(ref, opt_name, nesterov):
    m_ref, m_ours, m_one = model(), model(), model()
    if opt_name == "adamp":
        kw = dict(lr=1e-2, nesterov=nesterov)
        o_ref = ref.AdamP(groups_of(m_ref), **kw)
        o_ours, o_one = AdamP(groups_of(m_ours), **kw), AdamP(groups_of(m_one), comm=MPI.COMM_SELF, **kw)
    else:
        kw = dict(lr=0.1, momentum=0.9, nesterov=nesterov)
        o_ref = ref.SGDP(groups_of(m_ref), **kw)
        o_ours, o_one = SGDP(groups_of(m_ours), **kw), SGDP(groups_of(m_one), comm=MPI.COMM_SELF, **kw)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5) for o in (o_ref, o_ours, o_one)]
    params = [list(m.parameters()) for m in (m_ref, m_ours, m_one)]
    for step in range(6):
        for i, (pr, po, p1) in enumerate(zip(*params)):
            missing = (step == 2 and i == 3) or (step == 4 and i == 0)
            if missing:  # no gradient at this step: tensor and its counter untouched
                pr.grad = po.grad = p1.grad = None
                continue
            g = mean_gradient(pr, 100 * step + i, KINDS[i % len(KINDS)])
            pr.grad = g.clone()
            po.grad = share(g, 100 * step + i)  # a new tensor each step: replaced gradients are used
            p1.grad = g.clone()
        for o in (o_ref, o_ours, o_one):
            o.step()
        for s in scheds:
            s.step()
        for i, (pr, po, p1) in enumerate(zip(*params)):
            scale = max(pr.detach().abs().max().item(), 1e-30)
            err = (pr.detach() - po.detach()).abs().max().item() / scale
            assert err <= 2e-6, "step %d tensor %d: relative error %.3g against the reference" % (step, i, err)
        assert bits(params[1]) == bits(params[2]), "step %d: %d ranks and 1 rank differ" % (step, P)
        assert same_on_every_rank(params[1])
    assert o_ours.param_groups[0]["lr"] == o_ref.param_groups[0]["lr"]
    diag = o_ours.diagnostics()  # in the groups' order: conv.w, fc.w, out.w, then the 1-d tensors
    assert [d["view"] for d in diag][:4] == ["channel", "layer", "channel", "none"], diag
    assert [d["step"] for d in diag][:4] == [5, 5, 6, 6]
    sd, sd_ref = o_ours.state_dict(), o_ref.state_dict()
    for i, entry in sd_ref["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                scale = max(value.abs().max().item(), 1e-30)
                assert (sd["state"][i][key] - value).abs().max().item() / scale <= 2e-5, (i, key)
            else:
                assert sd["state"][i][key] == value, (i, key)
    for o in (o_ours, o_one):
        o.close()


def test_step_data_parallel_backward_and_closure():
    """The gradients of local backward passes are averaged: the same as one rank on the global batch
    (within rounding: the global batch's gradient is summed in another order)."""
    torch.manual_seed(5)
    x, y = torch.randn(6 * P, 3, 6, 6), torch.randint(0, 5, (6 * P,))
    m, m1 = model(1), model(1)
    for mm in (m, m1):
        mm.eval()  # BatchNorm with running statistics: the loss is a mean over samples
    o, o1 = AdamP(m.parameters(), lr=1e-2), AdamP(m1.parameters(), lr=1e-2, comm=MPI.COMM_SELF)
    mine = slice(6 * RANK, 6 * RANK + 6)

    def closure():
        o.zero_grad()
        assert torch.is_grad_enabled()
        loss = torch.nn.functional.cross_entropy(m(x[mine]), y[mine])
        loss.backward()
        return loss
    with torch.no_grad():  # step enables gradients for the closure, as torch.optim does
        loss = o.step(closure)
    assert torch.is_tensor(loss) and loss.dim() == 0
    for p in m.parameters():  # the gradient views stay in place: backward accumulated into them
        assert p.grad is not None
    o1.zero_grad()
    torch.nn.functional.cross_entropy(m1(x), y).backward()
    o1.step()
    for a, b in zip(m.parameters(), m1.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-5)
    assert same_on_every_rank(list(m.parameters()))
    o.zero_grad()
    assert all(float(p.grad.abs().max()) == 0.0 for p in m.parameters())
    o.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in m.parameters())
    o.close()
    o1.close()


def test_state_dict_both_ways_with_the_reference(ref):
    m_ref, m_ours = model(2), model(2)
    o_ref = ref.AdamP(m_ref.parameters(), lr=1e-2, weight_decay=1e-3)
    for step in range(3):
        for i, p in enumerate(m_ref.parameters()):
            p.grad = mean_gradient(p, 7 * step + i, KINDS[i % len(KINDS)])
        o_ref.step()
    o_ours = AdamP(m_ours.parameters(), lr=1.0)
    with torch.no_grad():
        for a, b in zip(m_ours.parameters(), m_ref.parameters()):
            a.copy_(b)
    o_ours.load_state_dict(o_ref.state_dict())  # official -> adampi: hyper-parameters too
    assert o_ours.param_groups[0]["lr"] == 1e-2 and o_ours.param_groups[0]["weight_decay"] == 1e-3
    for step in range(3, 5):
        for i, (a, b) in enumerate(zip(m_ref.parameters(), m_ours.parameters())):
            g = mean_gradient(a, 7 * step + i, KINDS[i % len(KINDS)])
            a.grad, b.grad = g.clone(), share(g, 7 * step + i)
        o_ref.step()
        o_ours.step()
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        assert (a - b).abs().max().item() <= 2e-6 * max(a.abs().max().item(), 1e-30)
    # adampi -> official: a fresh official optimizer continues from adampi's state dict.
    m_back = copy.deepcopy(m_ours)
    o_back = ref.AdamP(m_back.parameters(), lr=0.5)
    o_back.load_state_dict(o_ours.state_dict())
    assert o_back.state_dict()["state"][0]["step"] == 5
    for i, (a, b) in enumerate(zip(m_back.parameters(), m_ours.parameters())):
        g = mean_gradient(a, 999 + i, "plain")
        a.grad, b.grad = g.clone(), share(g, 999 + i)
    o_back.step()
    o_ours.step()
    for a, b in zip(m_back.parameters(), m_ours.parameters()):
        assert (a - b).abs().max().item() <= 2e-6 * max(a.abs().max().item(), 1e-30)
    o_ours.close()


def test_sgdp_state_dict_from_the_reference(ref):
    m_ref, m_ours = model(3), model(3)
    o_ref = ref.SGDP(m_ref.parameters(), lr=0.1, momentum=0.9)
    for i, p in enumerate(m_ref.parameters()):
        p.grad = mean_gradient(p, i, "plain")
    o_ref.step()
    o_ours = SGDP(m_ours.parameters(), lr=0.1, momentum=0.9)
    with torch.no_grad():
        for a, b in zip(m_ours.parameters(), m_ref.parameters()):
            a.copy_(b)
    sd = o_ref.state_dict()
    o_ours.load_state_dict(sd)  # the official SGDP keeps no step counter: taken as 1
    for i, (a, b) in enumerate(zip(m_ref.parameters(), m_ours.parameters())):
        g = mean_gradient(a, 50 + i, "channel")
        a.grad, b.grad = g.clone(), share(g, 50 + i)
    o_ref.step()
    o_ours.step()
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        assert (a - b).abs().max().item() <= 2e-6 * max(a.abs().max().item(), 1e-30)
    assert set(o_ours.state_dict()["state"][0]) == {"step", "momentum"}
    o_ours.close()


def feed(m, seed):
    for i, p in enumerate(m.parameters()):
        p.grad = share(mean_gradient(p, seed + i, KINDS[i % len(KINDS)]), seed + i)


def test_state_dict_into_a_second_optimizer_over_cloned_parameters():
    m = model(4)
    o = SGDP(groups_of(m), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for s in range(3):
        feed(m, 10 * s)
        o.step()
    m2 = copy.deepcopy(m)
    o2 = SGDP(groups_of(m2), lr=0.3, momentum=0.5)
    o2.load_state_dict(o.state_dict())
    for s in range(3, 6):
        feed(m, 10 * s)
        feed(m2, 10 * s)
        o.step()
        o2.step()
        assert bits(m.parameters()) == bits(m2.parameters())
    o.close()
    o2.close()


def test_save_on_these_ranks_load_on_any_other_count():
    m = model(6)
    o = AdamP(groups_of(m), lr=1e-2, nesterov=True)
    for s in range(3):
        feed(m, 20 * s)
        o.step()
    path = WORLD.bcast(tempfile.mkdtemp(prefix="adampi-torch-") if RANK == 0 else None)
    ck = os.path.join(path, "ck.h5")
    o.save(ck, user={"epoch": 3, "seed": -7}, keep_last=1)
    expected = o.state_dict()
    feed(m, 60)
    o.step()
    after = bits(m.parameters())
    # Sub-communicators of 1 and (up to) 2 ranks: N -> M within one mpirun.
    for comm in (MPI.COMM_SELF, WORLD.Split(RANK % 2, RANK)):
        m2 = model(99)
        o2 = AdamP(groups_of(m2), lr=0.5, comm=comm)
        assert o2.load(ck) == {"epoch": 3, "seed": -7}
        assert o2.param_groups[0]["lr"] == 1e-2 and o2.param_groups[0]["nesterov"] is True
        got = o2.state_dict()
        for i, entry in expected["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    assert torch.equal(got["state"][i][key], value), (comm.Get_size(), i, key)
                else:
                    assert got["state"][i][key] == value
        assert got["adampi"]["steps_taken"] == 3
        for i, p in enumerate(m2.parameters()):  # the mean gradient itself on every rank of comm
            p.grad = mean_gradient(p, 60 + i, KINDS[i % len(KINDS)])
        o2.step()
        assert bits(m2.parameters()) == after, "saved on %d ranks, resumed on %d" % (P, comm.Get_size())
        o2.close()
    # A damaged file is refused on every rank and changes nothing.
    WORLD.Barrier()
    if RANK == 0:
        os.truncate(ck, os.path.getsize(ck) // 2)
    WORLD.Barrier()
    before = bits(m.parameters())
    expect_everywhere(adampi.CheckpointError, lambda: o.load(ck))
    assert bits(m.parameters()) == before
    expect_everywhere(adampi.CheckpointError, lambda: o.load(os.path.join(path, "missing.h5")), "missing.h5")
    o.close()


def test_non_contiguous_parameters_repr_and_names():
    torch.manual_seed(8)
    w = torch.nn.Parameter(torch.randn(7, 5).t())  # non-contiguous
    b = torch.nn.Parameter(torch.randn(5))
    assert not w.is_contiguous()
    values = w.detach().clone()
    o = AdamP([("layer.weight", w), ("layer.bias", b)], lr=1e-2)
    assert torch.equal(w.detach(), values) and w.is_contiguous()
    w.grad, b.grad = torch.ones(5, 7) * 0.5, torch.ones(5)
    o.step()
    assert same_on_every_rank([w, b])
    text = repr(o)
    assert text.startswith("AdamP (") and "lr: 0.01" in text and "ranks" in text
    assert [d["name"] for d in o.diagnostics()] == ["layer.weight", "layer.bias"]
    w.grad = torch.full((5, 7), float("nan"))
    expect_everywhere(adampi.NonFiniteError, o.step, "layer.weight")
    o.close()


def test_invalid_hyper_parameters_raise_value_error():
    cases = [(AdamP, dict(lr=-1.0), "lr"), (AdamP, dict(betas=(1.0, 0.999)), "beta1"),
             (AdamP, dict(betas=(0.9, -0.1)), "beta2"), (AdamP, dict(eps=-1e-8), "eps"),
             (AdamP, dict(weight_decay=float("nan")), "weight_decay"), (AdamP, dict(delta=-0.1), "delta"),
             (AdamP, dict(wd_ratio=float("inf")), "wd_ratio"), (AdamP, dict(betas=0.9), "betas"),
             (SGDP, dict(lr=0.1, momentum=-0.5), "momentum"), (SGDP, dict(lr=0.1, dampening=2.0), "dampening"),
             (SGDP, dict(lr=0.1, nesterov=True), "nesterov"), (AdamP, dict(nonfinite="ignore"), "nonfinite"),
             (AdamP, dict(threads=-1), "threads"), (SGDP, dict(), "lr")]
    for cls, kw, word in cases:
        expect_everywhere(ValueError, lambda: cls(model().parameters(), **kw), word)
    # One rank alone with a bad value: every rank raises, naming that rank.
    bad = dict(lr=-1.0) if RANK == P - 1 else {}
    msg = expect_everywhere(ValueError, lambda: AdamP(model().parameters(), **bad), "lr")
    assert P == 1 or msg.startswith("rank %d: " % (P - 1))


def test_things_the_core_cannot_take():
    m = model()
    expect_everywhere(TypeError, lambda: AdamP([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]), "float64")
    # float64 on one rank only: all ranks raise.
    dt = torch.float64 if RANK == 0 else torch.float32
    expect_everywhere(TypeError, lambda: AdamP([torch.nn.Parameter(torch.zeros(3, dtype=dt))]), "float64")
    p = torch.nn.Parameter(torch.zeros(3))
    expect_everywhere(ValueError, lambda: AdamP([p, p]), "listed twice")
    o = AdamP(m.parameters())
    with pytest.raises(RuntimeError, match="add_param_group"):
        o.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    with pytest.raises(TypeError, match="pickled"):
        copy.deepcopy(o)
    o.close()
    with pytest.raises(RuntimeError, match="closed"):
        o.step()
    with pytest.raises(RuntimeError, match="closed"):
        o.zero_grad()
    assert all(p.is_contiguous() for p in m.parameters())  # the model stays usable after close


def test_ranks_that_disagree():
    # Different models: MismatchError on every rank from the core's registration check.
    m = model() if RANK != P - 1 or P == 1 else torch.nn.Linear(3, 2)
    if P > 1:
        expect_everywhere(adampi.MismatchError, lambda: AdamP(m.parameters()))
    m = model(9)
    o = AdamP(m.parameters(), lr=1e-2)
    feed(m, 0)
    o.step()
    before = bits(m.parameters())
    state = o.state_dict()
    # Different missing gradients.
    feed(m, 10)
    if P > 1 and RANK == 1:
        next(m.parameters()).grad = None
    if P > 1:
        expect_everywhere(adampi.MismatchError, o.step, "has_grad")
    # A NaN on one rank: every rank refuses, naming the parameter; nothing changed.
    feed(m, 10)
    if RANK == P - 1:
        list(m.parameters())[3].grad[0, 0] = float("nan")
    expect_everywhere(adampi.NonFiniteError, o.step, "param3", "gradient")
    # An invalid learning rate set on one rank only (a user's bug): ValueError everywhere.
    o.param_groups[0]["lr"] = -1.0 if RANK == P - 1 else 1e-2
    expect_everywhere(ValueError, o.step, "lr")
    o.param_groups[0]["lr"] = 1e-2
    # A replaced gradient the core cannot take (sparse), on one rank.
    feed(m, 10)
    if RANK == 0:
        p0 = list(m.parameters())[1]
        p0.grad = torch.zeros(p0.shape).to_sparse()
    expect_everywhere(TypeError, o.step, "dense")
    assert bits(m.parameters()) == before
    after = o.state_dict()
    for i, entry in state["state"].items():
        for key, value in entry.items():
            assert (torch.equal(after["state"][i][key], value) if torch.is_tensor(value)
                    else after["state"][i][key] == value)
    assert o.steps_taken == 1 and o.steps_skipped == 0
    # load_state_dict with a wrong shape on one rank, or a NaN: refused everywhere, nothing changed.
    bad = copy.deepcopy(state)
    if RANK == 0:
        bad["state"][0]["exp_avg"] = torch.zeros(2)
    expect_everywhere(ValueError, lambda: o.load_state_dict(bad), "shape")
    bad = copy.deepcopy(state)
    bad["state"][4]["exp_avg_sq"][0] = float("nan")
    expect_everywhere(adampi.NonFiniteError, lambda: o.load_state_dict(bad), "exp_avg_sq")
    bad = copy.deepcopy(state)
    bad["state"][1]["step"] = -3
    expect_everywhere(ValueError, lambda: o.load_state_dict(bad), "step")
    assert bits(m.parameters()) == before and o.state_dict()["state"][0]["step"] == 1
    o.close()


def test_skip_policy_counts_and_changes_nothing():
    m = model(10)
    o = SGDP(m.parameters(), lr=0.1, momentum=0.9, nonfinite="skip")
    feed(m, 0)
    o.step()
    before = bits(m.parameters())
    feed(m, 1)
    if RANK == 0:
        list(m.parameters())[0].grad[0, 0, 0, 0] = float("inf")
    o.step()
    assert o.steps_skipped == 1 and o.steps_taken == 1
    assert bits(m.parameters()) == before
    o.close()


def test_reduce_gradients_false_takes_averaged_gradients():
    m, m1 = model(11), model(11)
    o = AdamP(m.parameters(), lr=1e-2, reduce_gradients=False)
    o1 = AdamP(m1.parameters(), lr=1e-2, comm=MPI.COMM_SELF)
    for s in range(3):
        for i, (a, b) in enumerate(zip(m.parameters(), m1.parameters())):
            g = mean_gradient(a, 30 * s + i, KINDS[i % len(KINDS)])
            a.grad, b.grad = g.clone(), g.clone()  # DDP would have averaged them already
        o.step()
        o1.step()
        assert bits(m.parameters()) == bits(m1.parameters())
    o.close()
    o1.close()


def test_optimizer_state_is_sharded():
    m = model(12)
    o = AdamP(m.parameters())
    n = sum(p.numel() for p in m.parameters())
    lo, hi = o.shard
    sizes = WORLD.allgather(hi - lo)
    assert sum(sizes) == n
    prof = o.profile()
    # m and v of the shard (8 bytes an element) and a gradient shard (4), plus row statistics.
    assert prof["allocated_bytes"] >= 12 * (hi - lo)
    o.close()
