"""Generate the adampi reference fixtures with the PyTorch transcription in adamp_ref.py.

Usage: /usr/bin/python3 tests/reference/gen_fixtures.py

For every case NAME this writes, under tests/fixtures/:
- NAME.in.h5: replay input (optimizer, steps, hyper-parameters per group, initial parameters,
  gradient of every tensor at every step, optional learning-rate schedule);
- NAME.expected.h5: parameters and optimizer state after all steps and the projection decision
  of every tensor at every step.
The formats are described in tests/fixtures/README.md.

Gradients are built step by step from the current weights, so that a chosen view does or does not
see the tensor as scale-invariant (see `make_grad`). Everything is deterministic: the torch RNG is
seeded per case and runs on one CPU thread.

Margin rule: adampi computes the cosines in double and the reference in float32, so a cosine close
to its threshold could be decided differently. For every view evaluated, the ratio max_cos /
threshold is recomputed in float64 from the same float32 tensors; a case where any ratio lies in
[1 - MARGIN, 1 + MARGIN] is regenerated with the next seed.

After writing, every case is re-read with h5py, checked, and replayed from its .in.h5 file alone;
the replay must reproduce the .expected.h5 file bit for bit.
"""
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import h5py
import numpy as np
import torch

from adamp_ref import AdamP, SGDP, NO_GRAD, NOT_PROJECTED, CHANNEL, LAYER

FIXTURES = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         '..', 'fixtures'))
MARGIN = 0.03
MAX_SEED_TRIES = 100
FLOAT_HPARAMS = ('lr', 'beta1', 'beta2', 'eps', 'weight_decay', 'delta', 'wd_ratio',
                 'momentum', 'dampening')
DEFAULTS = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, delta=0.1,
                wd_ratio=0.1, momentum=0.0, dampening=0.0, nesterov=0)
STATE_NAMES = {'adamp': ('exp_avg', 'exp_avg_sq'), 'sgdp': ('momentum',)}
DECISIONS = (NO_GRAD, NOT_PROJECTED, CHANNEL, LAYER)


def hp(**overrides):
    """A complete hyper-parameter set for one group: DEFAULTS with `overrides`."""
    unknown = set(overrides) - set(DEFAULTS)
    assert not unknown, unknown
    return dict(DEFAULTS, **overrides)


@dataclass
class TensorSpec:
    shape: tuple
    group: int = 0
    kind: str = 'random'      # gradient direction: 'random', 'channel', 'layer' or 'cycle'
    init: str = 'randn'       # 'randn' (times init_scale), 'zeros', or 'ones' (1 + small noise)
    init_scale: float = 0.5
    grad_scale: float = 0.1
    p_missing: float = 0.0    # probability that the gradient is absent at a step
    zero_steps: tuple = ()    # steps at which the gradient is present and all zeros


@dataclass
class Case:
    optimizer: str
    groups: list
    tensors: list
    steps: int
    lr_schedule: Optional[np.ndarray] = None    # (steps, groups) float64
    min_counts: dict = field(default_factory=dict)  # decision -> minimum number of occurrences


@dataclass
class Result:
    initial: list      # float32 arrays
    grads: list        # grads[t][i]: float32 array or None
    params: list       # float32 arrays after all steps
    state: list        # state[i]: {name: float32 array}
    step: list         # per-tensor step counters
    decisions: np.ndarray
    ratios: list       # max_cos / threshold (float64) of every view evaluated

    @property
    def margin(self):
        return min((abs(r - 1) for r in self.ratios), default=math.inf)


# ----------------------------------------------------------------------------------- gradients

def initial_value(spec):
    if spec.init == 'zeros':
        return torch.zeros(spec.shape)
    if spec.init == 'ones':
        return 1 + 0.1 * torch.randn(spec.shape)
    return torch.randn(spec.shape) * spec.init_scale


def set_cosines(g, w, rows, cosines):
    """Give each row of g (float64) the cosine `cosines[r]` with the same row of w (approximately).

    Rows are those of the view of w with `rows` rows. The component of g_r along w_r is replaced
    by cosines[r] * ||g_r|| along w_r. Rows where w is zero are left unchanged.
    """
    g2 = g.reshape(rows, -1).clone()
    w2 = w.double().reshape(rows, -1)
    w_unit = w2 / w2.norm(dim=1, keepdim=True).clamp_min(1e-300)
    g2 -= w_unit * (g2 * w_unit).sum(dim=1, keepdim=True)
    g2 += w_unit * cosines.reshape(rows, 1) * g2.norm(dim=1, keepdim=True)
    return g2.reshape(g.shape)


def threshold(w, rows, delta):
    return delta / math.sqrt(w.numel() // rows)


def make_grad(spec, t, i, w, delta):
    """Gradient of tensor i (described by spec) at step t for current weights w, or None.

    Kinds (they only matter for tensors with ndim > 1):
    - 'random': Gaussian;
    - 'channel': every row's |cosine| with w uniform in [0, threshold / 2] under the channel view,
      so the channel view projects;
    - 'layer': rows get cosines of +-4 channel thresholds (alternating signs), then the tensor as
      a whole gets a |cosine| uniform in [0, threshold / 2] under the layer view, so the channel
      view fails and the layer view projects (for a single-row tensor both views are the same
      and the channel view projects);
    - 'cycle': channel, layer and random in turn, shifted by the tensor index.
    """
    missing = torch.rand(()).item() < spec.p_missing
    if t in spec.zero_steps:
        return np.zeros(spec.shape, np.float32)
    if missing:
        return None
    g = torch.randn(spec.shape, dtype=torch.float64) * spec.grad_scale
    kind = ('channel', 'layer', 'random')[(t + i) % 3] if spec.kind == 'cycle' else spec.kind
    if w.dim() > 1 and kind in ('channel', 'layer'):
        rows = w.shape[0]
        if kind == 'layer':
            signs = 1 - 2 * (torch.arange(rows, dtype=torch.float64) % 2)
            g = set_cosines(g, w, rows, 4 * threshold(w, rows, delta) * signs)
            rows = 1
        uniform = 2 * torch.rand(rows, dtype=torch.float64) - 1
        g = set_cosines(g, w, rows, 0.5 * threshold(w, rows, delta) * uniform)
    return g.float().numpy()


def view_ratios(w, g, delta, eps):
    """Float64 replay of the projection test: max_cos / threshold for each view evaluated."""
    ratios = []
    for rows in (w.shape[0], 1):
        w2 = w.double().reshape(rows, -1)
        g2 = g.double().reshape(rows, -1)
        cos = (g2 * w2).sum(dim=1).abs() / (g2.norm(dim=1).clamp_min(eps)
                                           * w2.norm(dim=1).clamp_min(eps))
        ratios.append(cos.max().item() / (delta / math.sqrt(w2.shape[1])))
        if ratios[-1] < 1:
            break
    return ratios


def decision_of(ratios):
    if ratios[0] < 1:
        return CHANNEL
    if len(ratios) > 1 and ratios[1] < 1:
        return LAYER
    return NOT_PROJECTED


# -------------------------------------------------------------------------------------- runner

def make_optimizer(optimizer, params, groups, group_of):
    param_groups = []
    for g, h in enumerate(groups):
        members = [p for p, pg in zip(params, group_of) if pg == g]
        common = dict(params=members, lr=h['lr'], eps=h['eps'], weight_decay=h['weight_decay'],
                      delta=h['delta'], wd_ratio=h['wd_ratio'], nesterov=bool(h['nesterov']))
        if optimizer == 'adamp':
            param_groups.append(dict(common, betas=(h['beta1'], h['beta2'])))
        else:
            param_groups.append(dict(common, momentum=h['momentum'], dampening=h['dampening']))
    return AdamP(param_groups) if optimizer == 'adamp' else SGDP(param_groups)


def run(optimizer, groups, group_of, initial, steps, grad_at, lr_schedule=None):
    """Run the reference optimizer; grad_at(t, i, w) returns tensor i's gradient or None."""
    torch.set_num_threads(1)
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in initial]
    opt = make_optimizer(optimizer, params, groups, group_of)
    n = len(params)
    grads = []
    decisions = np.full((steps, n), NO_GRAD, np.int8)
    ratios = []
    for t in range(steps):
        if lr_schedule is not None:
            for g, group in enumerate(opt.param_groups):
                group['lr'] = float(lr_schedule[t, g])
        grads.append([])
        predicted = {}
        for i, p in enumerate(params):
            g = grad_at(t, i, p.detach().clone())
            grads[t].append(g)
            p.grad = None if g is None else torch.from_numpy(g.copy())
            if g is not None and p.dim() > 1:
                h = groups[group_of[i]]
                predicted[i] = view_ratios(p.detach(), p.grad, h['delta'], h['eps'])
                ratios += predicted[i]
        opt.step()
        for i, p in enumerate(params):
            if p.grad is None:
                continue
            record = opt.projection_log.get(p)
            decisions[t, i] = NOT_PROJECTED if record is None else record.decision
            if i in predicted:
                assert record.decision == decision_of(predicted[i]), (t, i, record, predicted[i])
    state = []
    step = []
    for p in params:
        s = opt.state[p]
        state.append({k: s[k].numpy().copy() if k in s else np.zeros(p.shape, np.float32)
                      for k in STATE_NAMES[optimizer]})
        step.append(s.get('step', 0))
    return Result([w.copy() for w in initial], grads, [p.detach().numpy().copy() for p in params],
                  state, step, decisions, ratios)


def simulate(case, seed):
    torch.manual_seed(seed)
    initial = [initial_value(s).numpy() for s in case.tensors]

    def grad_at(t, i, w):
        spec = case.tensors[i]
        return make_grad(spec, t, i, w, case.groups[spec.group]['delta'])

    return run(case.optimizer, case.groups, [s.group for s in case.tensors], initial,
               case.steps, grad_at, case.lr_schedule)


# ----------------------------------------------------------------------------------------- I/O

def set_attrs(obj, attrs):
    """Scalar attributes: str -> fixed-length ASCII string, int -> int64, float -> float64."""
    for key, value in attrs.items():
        if isinstance(value, str):
            obj.attrs[key] = np.bytes_(value)
        elif isinstance(value, (int, np.integer)):
            obj.attrs[key] = np.int64(value)
        else:
            obj.attrs[key] = np.float64(value)


def write_input(path, case, result):
    with h5py.File(path, 'w') as f:
        set_attrs(f, dict(optimizer=case.optimizer, steps=case.steps))
        for g, h in enumerate(case.groups):
            set_attrs(f.create_group(f'groups/{g}'),
                      dict({k: float(h[k]) for k in FLOAT_HPARAMS}, nesterov=int(h['nesterov'])))
        f.create_group('params')
        for i, (w, spec) in enumerate(zip(result.initial, case.tensors)):
            set_attrs(f.create_dataset(f'params/{i}', data=w), dict(group=spec.group))
        f.create_group('grads')
        for t, grads in enumerate(result.grads):
            step = f.create_group(f'grads/{t}')
            for i, g in enumerate(grads):
                if g is not None:
                    step.create_dataset(str(i), data=g)
        if case.lr_schedule is not None:
            f.create_dataset('lr_schedule', data=np.asarray(case.lr_schedule, np.float64))


def write_expected(path, case, result):
    with h5py.File(path, 'w') as f:
        set_attrs(f, dict(optimizer=case.optimizer, steps=case.steps))
        f.create_group('params')
        for i, w in enumerate(result.params):
            f.create_dataset(f'params/{i}', data=w)
        for i, (state, step) in enumerate(zip(result.state, result.step)):
            group = f.create_group(f'state/{i}')
            set_attrs(group, dict(step=step))
            for key, value in state.items():
                group.create_dataset(key, data=value)
        f.create_dataset('decisions', data=result.decisions)


def read_input(path):
    with h5py.File(path, 'r') as f:
        optimizer = f.attrs['optimizer'].decode()
        steps = int(f.attrs['steps'])
        groups = []
        for g in range(len(f['groups'])):
            a = f[f'groups/{g}'].attrs
            groups.append(dict({k: float(a[k]) for k in FLOAT_HPARAMS},
                               nesterov=int(a['nesterov'])))
        n = len(f['params'])
        initial = [np.asarray(f[f'params/{i}'][()]) for i in range(n)]
        group_of = [int(f[f'params/{i}'].attrs['group']) for i in range(n)]
        grads = [[np.asarray(f[f'grads/{t}/{i}'][()]) if str(i) in f[f'grads/{t}'] else None
                  for i in range(n)] for t in range(steps)]
        lr_schedule = f['lr_schedule'][()] if 'lr_schedule' in f else None
    return optimizer, groups, group_of, initial, steps, grads, lr_schedule


def verify(name, case):
    """Re-read both files, check their layout, and replay the input: it must match bit for bit."""
    inp = os.path.join(FIXTURES, f'{name}.in.h5')
    exp = os.path.join(FIXTURES, f'{name}.expected.h5')
    optimizer, groups, group_of, initial, steps, grads, lr_schedule = read_input(inp)
    n = len(initial)
    assert optimizer == case.optimizer and steps == case.steps and n == len(case.tensors)
    assert group_of == [s.group for s in case.tensors]
    for w, spec in zip(initial, case.tensors):
        assert w.dtype == np.float32 and w.shape == spec.shape
    for t in range(steps):
        for i in range(n):
            assert grads[t][i] is None or grads[t][i].shape == initial[i].shape
    if lr_schedule is not None:
        assert lr_schedule.shape == (steps, len(groups))

    replay = run(optimizer, groups, group_of, initial, steps, lambda t, i, w: grads[t][i],
                 lr_schedule)
    with h5py.File(exp, 'r') as f:
        assert f.attrs['optimizer'].decode() == optimizer and int(f.attrs['steps']) == steps
        decisions = f['decisions'][()]
        assert decisions.dtype == np.int8 and decisions.shape == (steps, n)
        assert np.array_equal(decisions, replay.decisions)
        for i in range(n):
            w = f[f'params/{i}'][()]
            assert w.dtype == np.float32 and w.shape == initial[i].shape
            assert np.array_equal(w, replay.params[i])
            assert int(f[f'state/{i}'].attrs['step']) == replay.step[i]
            assert replay.step[i] == sum(g[i] is not None for g in grads)
            for key in STATE_NAMES[optimizer]:
                assert np.array_equal(f[f'state/{i}/{key}'][()], replay.state[i][key])
            for t in range(steps):
                absent = grads[t][i] is None
                assert (decisions[t, i] == NO_GRAD) == absent
                if not absent and initial[i].ndim <= 1:
                    assert decisions[t, i] == NOT_PROJECTED
    assert replay.margin > MARGIN
    return decisions, replay.margin


# --------------------------------------------------------------------------------------- cases

def cosine_schedule(base_lrs, steps, floor=0.1):
    t = np.arange(steps)[:, None]
    decay = floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t / steps))
    return np.asarray(base_lrs, np.float64)[None, :] * decay


def step_schedule(base_lrs, steps, milestones, factor):
    t = np.arange(steps)[:, None]
    drops = sum((t >= m).astype(np.float64) for m in milestones)
    return np.asarray(base_lrs, np.float64)[None, :] * factor ** drops


def adamp_basic():
    return Case('adamp', [hp(lr=1e-2)], steps=20, tensors=[
        TensorSpec(()),
        TensorSpec((7,)),
        TensorSpec((6, 10), kind='channel'),
        TensorSpec((4, 3, 3, 3), kind='channel'),
        TensorSpec((1, 50), kind='cycle'),
        TensorSpec((40, 3), kind='random'),
        TensorSpec((40, 3), kind='channel'),
        TensorSpec((3, 200), kind='cycle'),
    ], min_counts={CHANNEL: 60, NOT_PROJECTED: 50})


def adamp_layer():
    return Case('adamp', [hp(lr=1e-2, weight_decay=0.01, wd_ratio=0.1)], steps=20, tensors=[
        TensorSpec((8, 16), kind='layer'),
        TensorSpec((4, 3, 3, 3), kind='layer'),
        TensorSpec((16, 4), kind='layer'),
        TensorSpec((5, 30), kind='cycle'),
        TensorSpec((10,)),
    ], min_counts={LAYER: 60, CHANNEL: 5})


def adamp_nesterov_wd_groups():
    groups = [hp(lr=1e-2, beta1=0.8, beta2=0.99, weight_decay=0.05, nesterov=1),
              hp(lr=5e-3, beta1=0.95, beta2=0.999, weight_decay=0.0, nesterov=1)]
    steps = 24
    schedule = cosine_schedule([1e-2, 5e-3], steps)
    return Case('adamp', groups, steps=steps, lr_schedule=schedule, tensors=[
        TensorSpec((6, 10), group=0, kind='cycle', p_missing=0.3),
        TensorSpec((4, 3, 3, 3), group=0, kind='channel', p_missing=0.3, zero_steps=(5,)),
        TensorSpec((12, 5), group=0, kind='layer', p_missing=0.3),
        TensorSpec((3, 40), group=0, kind='random', p_missing=0.3),
        TensorSpec((6,), group=1, p_missing=0.3),
        TensorSpec((4,), group=1, p_missing=0.3, zero_steps=(5,)),
        TensorSpec((), group=1, p_missing=0.3),
        TensorSpec((12,), group=1, init='ones', p_missing=0.3),
    ], min_counts={NO_GRAD: 30, CHANNEL: 20, LAYER: 10, NOT_PROJECTED: 40})


def sgdp_momentum():
    groups = [hp(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=1e-3, nesterov=0)]
    return Case('sgdp', groups, steps=25, tensors=[
        TensorSpec((8, 12), kind='channel'),
        TensorSpec((4, 3, 3, 3), kind='channel'),
        TensorSpec((16, 6), kind='cycle'),
        TensorSpec((5, 20), kind='random'),
        TensorSpec((8,)),
    ], min_counts={CHANNEL: 55, LAYER: 5, NOT_PROJECTED: 30})


def sgdp_nesterov():
    groups = [hp(lr=0.05, momentum=0.9, nesterov=1, weight_decay=5e-4),
              hp(lr=0.02, momentum=0.9, nesterov=1, weight_decay=0.0)]
    steps = 20
    schedule = step_schedule([0.05, 0.02], steps, milestones=(8, 15), factor=0.3)
    return Case('sgdp', groups, steps=steps, lr_schedule=schedule, tensors=[
        TensorSpec((8, 12), group=0, kind='channel'),
        TensorSpec((4, 3, 3, 3), group=0, kind='cycle', p_missing=0.15),
        TensorSpec((10, 6), group=0, kind='layer', p_missing=0.15),
        TensorSpec((6, 25), group=0, kind='random'),
        TensorSpec((8,), group=1),
        TensorSpec((6,), group=1, p_missing=0.15),
        TensorSpec((), group=1),
    ], min_counts={NO_GRAD: 3, CHANNEL: 20, LAYER: 20, NOT_PROJECTED: 20})


def sgdp_dampening():
    groups = [hp(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=1e-3, nesterov=0),
              hp(lr=0.05, momentum=0.0, dampening=0.0, weight_decay=1e-3, nesterov=0)]
    return Case('sgdp', groups, steps=20, tensors=[
        TensorSpec((8, 12), group=0, kind='channel'),
        TensorSpec((4, 3, 3, 3), group=0, kind='cycle'),
        TensorSpec((6,), group=0),
        TensorSpec((10, 6), group=1, kind='channel'),
        TensorSpec((5, 20), group=1, kind='cycle'),
        TensorSpec((6,), group=1),
    ], min_counts={CHANNEL: 50, LAYER: 10, NOT_PROJECTED: 20})


def edge_tensors(steps):
    """Tensors shared by the two edge cases.

    Group 0 has an ordinary learning rate. Group 1 holds tiny weights with a learning rate small
    enough to keep them far below eps, so the norm clamping and the eps of the projection matter
    at every step.
    """
    return [
        TensorSpec((5, 4), init='zeros', kind='cycle', zero_steps=(0,)),
        TensorSpec((6, 8), group=1, init_scale=1e-10, kind='cycle'),
        TensorSpec((6, 10), kind='cycle', zero_steps=(2, 3, 7, 11)),
        TensorSpec((4, 3, 3, 3), init_scale=1e3, grad_scale=1e-6, kind='cycle'),
        TensorSpec((8,), init_scale=1e3, grad_scale=1e-6),
        TensorSpec((5,), group=1, init_scale=1e-10),
        TensorSpec((7,), zero_steps=(0, 1, 5)),
        TensorSpec((), zero_steps=tuple(range(steps))),
    ]


def edge_values():
    groups = [hp(lr=1e-2, weight_decay=0.1), hp(lr=1e-10, weight_decay=0.1)]
    return Case('adamp', groups, steps=16, tensors=edge_tensors(16),
                min_counts={CHANNEL: 20, LAYER: 10, NOT_PROJECTED: 40})


def edge_values_sgdp():
    groups = [hp(lr=0.05, momentum=0.9, weight_decay=0.1),
              hp(lr=1e-10, momentum=0.9, weight_decay=0.1)]
    return Case('sgdp', groups, steps=16, tensors=edge_tensors(16),
                min_counts={CHANNEL: 20, LAYER: 10, NOT_PROJECTED: 40})


def wide_rows():
    return Case('adamp', [hp(lr=1e-2, weight_decay=0.01)], steps=5, tensors=[
        TensorSpec((2, 5000), kind='cycle'),
        TensorSpec((5000,)),
        TensorSpec((700, 2), kind='cycle'),
    ], min_counts={CHANNEL: 3, LAYER: 3, NOT_PROJECTED: 5})


CASES = [  # (name, case function, first seed tried)
    ('adamp_basic', adamp_basic, 1000),
    ('adamp_layer', adamp_layer, 2000),
    ('adamp_nesterov_wd_groups', adamp_nesterov_wd_groups, 3000),
    ('sgdp_momentum', sgdp_momentum, 4000),
    ('sgdp_nesterov', sgdp_nesterov, 5000),
    ('sgdp_dampening', sgdp_dampening, 6000),
    ('edge_values', edge_values, 7000),
    ('edge_values_sgdp', edge_values_sgdp, 7000),
    ('wide_rows', wide_rows, 8000),
]


def generate(name, case_fn, first_seed):
    case = case_fn()
    for seed in range(first_seed, first_seed + MAX_SEED_TRIES):
        result = simulate(case, seed)
        if result.margin > MARGIN:
            break
    else:
        raise AssertionError(f'{name}: no seed without a fragile decision')
    for decision, minimum in case.min_counts.items():
        count = int((result.decisions == decision).sum())
        assert count >= minimum, f'{name}: decision {decision} occurs {count} < {minimum} times'
    os.makedirs(FIXTURES, exist_ok=True)
    write_input(os.path.join(FIXTURES, f'{name}.in.h5'), case, result)
    write_expected(os.path.join(FIXTURES, f'{name}.expected.h5'), case, result)
    return case, seed


def main():
    print(f'torch {torch.__version__}, h5py {h5py.__version__}, numpy {np.__version__}')
    print(f'{"case":26s} {"seed":>5s} {"T":>3s} {"n":>3s}'
          + ''.join(f'{d:>6d}' for d in DECISIONS) + f' {"min|r-1|":>9s} {"KB":>6s}')
    total = 0
    for name, case_fn, first_seed in CASES:
        case, seed = generate(name, case_fn, first_seed)
        decisions, margin = verify(name, case)
        size = sum(os.path.getsize(os.path.join(FIXTURES, f'{name}.{kind}.h5'))
                   for kind in ('in', 'expected'))
        total += size
        counts = ''.join(f'{int((decisions == d).sum()):6d}' for d in DECISIONS)
        print(f'{name:26s} {seed:5d} {case.steps:3d} {len(case.tensors):3d}{counts}'
              f' {margin:9.4f} {size / 1024:6.1f}')
    print(f'total {total / 1024:.1f} KB')


if __name__ == '__main__':
    main()
