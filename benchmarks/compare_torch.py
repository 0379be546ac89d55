#!/usr/bin/python3
"""compare_torch.py - adampi's step against PyTorch optimizers on the same shapes, in one run.

    /usr/bin/python3 benchmarks/compare_torch.py [--set resnet50|gpt2] [--steps K] [--threads T] [--build build]

Measures, T threads each (1 by default: torch.set_num_threads(T), adampi's cfg.threads = T with
mpirun --bind-to none), fp32, random gradients:
  - torch.optim.AdamW and torch.optim.SGD (momentum 0.9), foreach implementations;
  - AdamP and SGDP: the official package `adamp` when importable (set ADAMP_PATH to its source),
    otherwise tests/reference/adamp_ref.py, a PyTorch transcription of MATHS.md written like the
    official package (labelled as such);
  - adampi through build/bin/bench_step (adamp, sgdp, and adamw / sgd = delta 0), run by this script
    right after, on the same shapes.
Prints ms per step, adampi's speed-up over each, and the page faults per PyTorch step. PyTorch's
per-step temporaries fault pages heavily with glibc's default allocator (mmap for large blocks), and
still with only mmap_threshold raised (the heap's top is given back at every free, and faulted in
again); the fair setting for the peers is
GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736,
which leaves them with (almost) no faults per step. The setting in force is printed.
Needs Debian's python3-torch.
"""
import argparse
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def resnet50_shapes():
    s = [(64, 3, 7, 7), (64,), (64,)]
    inp = 64
    for layer, blocks in enumerate([3, 4, 6, 3]):
        w = 64 << layer
        for b in range(blocks):
            for conv in [(w, inp, 1, 1), (w, w, 3, 3), (4 * w, w, 1, 1)]:
                s += [conv, (conv[0],), (conv[0],)]
            if b == 0:
                s += [(4 * w, inp, 1, 1), (4 * w,), (4 * w,)]
            inp = 4 * w
    return s + [(1000, 2048), (1000,)]


def gpt2_shapes():
    s = [(50257, 768), (1024, 768)]
    for _ in range(12):
        s += [(768,), (768,), (768, 2304), (2304,), (768, 768), (768,), (768,), (768,), (768, 3072), (3072,),
              (3072, 768), (768,)]
    return s + [(768,), (768,)]


def load_adamp():
    path = os.environ.get('ADAMP_PATH')
    if path:
        sys.path.insert(0, path)
        try:
            import adamp  # noqa: official package
            return adamp.AdamP, adamp.SGDP, 'official adamp package (%s)' % path
        except ImportError:
            pass
    sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'reference'))
    import adamp_ref
    return adamp_ref.AdamP, adamp_ref.SGDP, 'PyTorch transcription of MATHS.md (tests/reference/adamp_ref.py), not the official package'


def time_torch(make, shapes, steps):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(sh) * 0.5) for sh in shapes]
    for p in params:
        p.grad = torch.randn(p.shape) * 0.01
    opt = make(params)
    for _ in range(2):
        opt.step()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    ms = 1e3 * (time.perf_counter() - t0) / steps
    return ms, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps


def time_adampi(build, shape_set, opt, steps, threads):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1')
    env.pop('GLIBC_TUNABLES', None)
    bind = ['--bind-to', 'none'] if threads > 1 else []
    out = subprocess.run(['mpirun', '-np', '1'] + bind + [os.path.join(build, 'bin', 'bench_step'), '--set', shape_set,
                          '--opt', opt, '--grads', 'random', '--steps', str(steps), '--threads', str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    for line in out.stdout.splitlines():
        if line.startswith('csv,') and not line.startswith('csv,set'):
            return float(line.split(',')[8])
    raise RuntimeError('bench_step printed no result:\n' + out.stdout + out.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--set', default='resnet50', choices=['resnet50', 'gpt2'])
    ap.add_argument('--steps', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--build', default=os.path.join(HERE, '..', 'build'))
    a = ap.parse_args()
    if a.threads < 1:
        ap.error('--threads must be at least 1')
    torch.set_num_threads(a.threads)
    shapes = resnet50_shapes() if a.set == 'resnet50' else gpt2_shapes()
    steps = a.steps or (11 if a.set == 'resnet50' else 5)
    AdamP, SGDP, label = load_adamp()
    n = sum(torch.Size(s).numel() for s in shapes)
    print('%s: %d tensors, %.1fM parameters, torch %s, %d thread(s) each (torch reports %d), GLIBC_TUNABLES=%s' %
          (a.set, len(shapes), n / 1e6, torch.__version__, a.threads, torch.get_num_threads(),
           os.environ.get('GLIBC_TUNABLES', '(default allocator)')))
    print('AdamP/SGDP in PyTorch: ' + label)
    rows = [
        ('AdamP (PyTorch)', lambda p: AdamP(p, lr=1e-3, weight_decay=1e-2), 'adamp'),
        ('torch AdamW foreach', lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, foreach=True), 'adamw'),
        ('SGDP (PyTorch)', lambda p: SGDP(p, lr=1e-3, momentum=0.9, weight_decay=1e-2), 'sgdp'),
        ('torch SGD foreach', lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, weight_decay=1e-2, foreach=True), 'sgd'),
    ]
    print('csv,set,torch_optimizer,torch_ms,adampi_optimizer,adampi_ms,speedup,torch_page_faults_per_step')
    for name, make, ours in rows:
        t, faults = time_torch(make, shapes, steps)
        u = time_adampi(a.build, a.set, ours, steps, a.threads)
        print('csv,%s,%s,%.2f,%s,%.2f,%.2f,%.0f' % (a.set, name, t, ours, u, t / u, faults))
        print('  %-22s %9.1f ms   adampi %-6s %8.1f ms   speed-up %5.1fx   (PyTorch: %.0f page faults per step)' %
              (name, t, ours, u, t / u, faults))


if __name__ == '__main__':
    main()
