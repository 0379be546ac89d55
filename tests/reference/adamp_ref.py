"""PyTorch reference implementation of AdamP and SGDP for the adampi test fixtures.

This module is a transcription of the adampi maths contract (MATHS.md, section 1) written in the style of the
official PyTorch package `adamp` 0.3.0 (Heo et al., "Slowing Down the Weight Norm Increase in
Momentum-based Optimizers", ICLR 2021): `torch.optim.Optimizer` subclasses, `_channel_view`,
`_layer_view`, `_cosine_similarity` and `_projection` with the same operations in the same order.
It is NOT the official package itself.

Differences from the official package, all of them bookkeeping that leaves the numbers unchanged:
- `_projection` records its decision in `optimizer.projection_log`, a dict cleared at the start of
  every `step()` and mapping each parameter that went through the projection (ndim > 1, gradient
  present) to a `ProjectionRecord`: the decision (`NOT_PROJECTED`, `CHANNEL` or `LAYER`) and, for
  every view it evaluated in order, the float32 maximum cosine and the threshold.
- SGDP keeps a per-tensor step counter `state['step']` (the official SGDP has none).
- The helpers shared by both optimizers live in a common base class.
"""
import math
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch.optim.optimizer import Optimizer, required

NO_GRAD = -1
NOT_PROJECTED = 0
CHANNEL = 1
LAYER = 2

ProjectionRecord = namedtuple('ProjectionRecord', ['decision', 'views'])
"""decision: NOT_PROJECTED, CHANNEL or LAYER; views: [(max_cos, threshold), ...] per view tried."""


class _ScaleInvariantOptimizer(Optimizer):
    """Projection helpers shared by AdamP and SGDP."""

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        self.projection_log = {}

    def _channel_view(self, x):
        return x.view(x.size(0), -1)

    def _layer_view(self, x):
        return x.view(1, -1)

    def _cosine_similarity(self, x, y, eps, view_func):
        x = view_func(x)
        y = view_func(y)
        return F.cosine_similarity(x, y, dim=1, eps=eps).abs_()

    def _projection(self, p, grad, perturb, delta, wd_ratio, eps):
        wd = 1
        expand_size = [-1] + [1] * (len(p.shape) - 1)
        views = []
        for decision, view_func in [(CHANNEL, self._channel_view), (LAYER, self._layer_view)]:
            cosine_sim = self._cosine_similarity(grad, p.data, eps, view_func)
            threshold = delta / math.sqrt(view_func(p.data).size(1))
            views.append((cosine_sim.max().item(), threshold))
            if cosine_sim.max() < threshold:
                p_n = p.data / view_func(p.data).norm(dim=1).view(expand_size).add_(eps)
                perturb -= p_n * view_func(p_n * perturb).sum(dim=1).view(expand_size)
                wd = wd_ratio
                self.projection_log[p] = ProjectionRecord(decision, views)
                return perturb, wd
        self.projection_log[p] = ProjectionRecord(NOT_PROJECTED, views)
        return perturb, wd


class AdamP(_ScaleInvariantOptimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0, delta=0.1, wd_ratio=0.1, nesterov=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        delta=delta, wd_ratio=wd_ratio, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.projection_log = {}

        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue

                grad = p.grad.data
                beta1, beta2 = group['betas']
                nesterov = group['nesterov']

                state = self.state[p]

                # State initialization
                if len(state) == 0:
                    state['step'] = 0
                    state['exp_avg'] = torch.zeros_like(p.data)
                    state['exp_avg_sq'] = torch.zeros_like(p.data)

                # Adam
                exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']

                state['step'] += 1
                bias_correction1 = 1 - beta1 ** state['step']
                bias_correction2 = 1 - beta2 ** state['step']

                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])
                step_size = group['lr'] / bias_correction1

                if nesterov:
                    perturb = (beta1 * exp_avg + (1 - beta1) * grad) / denom
                else:
                    perturb = exp_avg / denom

                # Projection
                wd_ratio = 1
                if len(p.shape) > 1:
                    perturb, wd_ratio = self._projection(p, grad, perturb, group['delta'],
                                                         group['wd_ratio'], group['eps'])

                # Weight decay
                if group['weight_decay'] > 0:
                    p.data.mul_(1 - group['lr'] * group['weight_decay'] * wd_ratio)

                # Step
                p.data.add_(perturb, alpha=-step_size)

        return loss


class SGDP(_ScaleInvariantOptimizer):
    def __init__(self, params, lr=required, momentum=0, dampening=0,
                 weight_decay=0, nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, eps=eps, delta=delta, wd_ratio=wd_ratio)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.projection_log = {}

        for group in self.param_groups:
            weight_decay = group['weight_decay']
            momentum = group['momentum']
            dampening = group['dampening']
            nesterov = group['nesterov']

            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]

                # State initialization
                if len(state) == 0:
                    state['step'] = 0
                    state['momentum'] = torch.zeros_like(p.data)
                state['step'] += 1

                # SGD
                buf = state['momentum']
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                if nesterov:
                    d_p = grad + momentum * buf
                else:
                    d_p = buf

                # Projection (without nesterov, d_p IS the momentum buffer: projected in place)
                wd_ratio = 1
                if len(p.shape) > 1:
                    d_p, wd_ratio = self._projection(p, grad, d_p, group['delta'],
                                                     group['wd_ratio'], group['eps'])

                # Weight decay
                if weight_decay != 0:
                    p.data.mul_(1 - group['lr'] * group['weight_decay'] * wd_ratio
                                / (1 - momentum))

                # Step
                p.data.add_(d_p, alpha=-group['lr'])

        return loss
