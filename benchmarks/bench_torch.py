"""The PyTorch training step three ways, under mpirun, one thread per rank:

  ddp     DistributedDataParallel over gloo with the official AdamP
  zero    DDP over gloo with ZeroRedundancyOptimizer(optimizer_class=adamp.AdamP)
  adampi  adampi.torch.AdamP, no DDP (its step averages the gradients)

Per iteration (medians, the slowest rank): the gradient exchange plus the optimizer step, the
whole iteration, and forward+backward alone; the peak RSS per rank and the optimizer's state per
rank. For DDP the exchange runs inside backward, so exchange plus step is the whole iteration less
forward+backward under no_sync() on the same batch; for adampi, the step (which holds the
exchange: its reduce-scatter and all-gather are also reported alone, from opt.profile()). --dump writes rank 0's parameters after the first step
from the common initial state, and --compare reports how far the modes' parameters are apart.

  mpirun -np 2 python3 benchmarks/bench_torch.py --mode adampi [--iters 8] [--dump a.npy] [--csv out.csv]
  python3 benchmarks/bench_torch.py --compare ddp.npy zero.npy adampi.npy
Run all of it with benchmarks/run_torch.sh. The official package comes from ADAMP_PATH (else
../shared/reference, else the project's transcription tests/reference/adamp_ref.py, named so).
"""
import argparse
import importlib
import os
import resource
import socket
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))


def reference():
    for path in (os.environ.get("ADAMP_PATH"), os.path.join(ROOT, "..", "shared", "reference")):
        if path and os.path.isfile(os.path.join(path, "adamp", "__init__.py")):
            sys.path.insert(0, os.path.abspath(path))
            return importlib.import_module("adamp"), "official adamp 0.3.0"
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    return importlib.import_module("adamp_ref"), "adampi's transcription (tests/reference/adamp_ref.py)"


def make_model(torch, width):
    """A BatchNorm CNN (VGG-like) on 3x16x16 inputs: conv-bn-relu blocks, then two Linear layers."""
    nn = torch.nn
    layers, c = [], 3
    for k, out in enumerate((width, 2 * width, 4 * width, 8 * width)):
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        if k < 3:
            layers.append(nn.MaxPool2d(2))
        c = out
    layers += [nn.Flatten(), nn.Linear(c * 2 * 2, 16 * width, bias=False), nn.BatchNorm1d(16 * width), nn.ReLU(),
               nn.Linear(16 * width, 10)]
    return nn.Sequential(*layers)


def compare(files):
    arrays = {os.path.basename(f).split(".")[0]: np.load(f) for f in files}
    names = list(arrays)
    print("| pair | max abs difference | relative to max abs parameter |")
    print("|---|---|---|")
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = arrays[names[i]], arrays[names[j]]
            d = float(np.abs(a - b).max())
            print("| %s vs %s | %.3g | %.3g |" % (names[i], names[j], d, d / float(np.abs(a).max())))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("ddp", "zero", "adampi"))
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="samples per rank")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--dump")
    ap.add_argument("--csv")
    ap.add_argument("--compare", nargs="+")
    args = ap.parse_args()
    if args.compare:
        return compare(args.compare)
    from mpi4py import MPI
    import torch
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    adamp, ref_name = reference()
    torch.manual_seed(0)
    model = make_model(torch, args.width)
    nparams = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(1 + rank)
    batches = [(torch.randn(args.batch, 3, 16, 16, generator=gen), torch.randint(0, 10, (args.batch,), generator=gen))
               for _ in range(args.iters)]
    lossf = torch.nn.functional.cross_entropy
    hp = dict(lr=1e-3, weight_decay=1e-2)

    if args.mode in ("ddp", "zero"):
        import torch.distributed as dist
        port = None
        if rank == 0:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        port = comm.bcast(port)
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=size)
        net = torch.nn.parallel.DistributedDataParallel(model)
        if args.mode == "ddp":
            opt = adamp.AdamP(net.parameters(), **hp)
        else:
            from torch.distributed.optim import ZeroRedundancyOptimizer
            opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=adamp.AdamP, **hp)
    else:
        sys.path.insert(0, os.path.join(ROOT, "src", "python"))
        from adampi.torch import AdamP
        net = model
        opt = AdamP(model.parameters(), **hp)

    # Per iteration: forward+backward alone (DDP: under no_sync), then a whole iteration
    # (DDP: the same batch again, its exchange inside backward, then the step). The exchange plus
    # the step is the whole iteration less the slowest rank's forward+backward, so that waiting
    # for the slower rank counts alike in every mode.
    fb, it = [], []
    for k, (x, y) in enumerate(batches):
        opt.zero_grad()
        comm.Barrier()
        t0 = time.perf_counter()
        if args.mode == "adampi":
            lossf(net(x), y).backward()
        else:
            with net.no_sync():
                lossf(net(x), y).backward()
            fb.append(time.perf_counter() - t0)
            opt.zero_grad()
            comm.Barrier()
            t0 = time.perf_counter()
            lossf(net(x), y).backward()
        if args.mode == "adampi":
            fb.append(time.perf_counter() - t0)
        opt.step()
        it.append(time.perf_counter() - t0)
        if k == 0 and args.dump and rank == 0:
            np.save(args.dump, torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy())
    med = statistics.median
    skip = 1 if len(fb) > 2 else 0  # the first iteration warms caches and allocators up
    fb_max = [max(v) for v in zip(*comm.allgather(fb))]
    it_max = [max(v) for v in zip(*comm.allgather(it))]
    t_xs = med([a - b for a, b in zip(it_max[skip:], fb_max[skip:])])
    t_it, t_fb = med(it_max[skip:]), med(fb_max[skip:])
    if args.mode == "adampi":
        prof = opt.profile()
        state_bytes = 8 * (opt.shard[1] - opt.shard[0])
        t_exchange_part = prof["reduce_scatter"] + prof["allgather"]
    else:
        inner = opt.optim if args.mode == "zero" else opt
        state_bytes = sum(v.numel() * v.element_size() for st in inner.state.values() for v in st.values()
                          if torch.is_tensor(v))
        t_exchange_part = float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows = comm.gather((t_xs, t_it, t_fb, t_exchange_part, state_bytes, rss), root=0)
    if rank == 0:
        worst = [max(r[k] for r in rows) for k in range(6)]
        line = ("%s,%d,%d,%.2f,%.2f,%.2f,%.2f,%.3f,%.1f" %
                (args.mode, size, nparams, 1e3 * worst[0], 1e3 * worst[1], 1e3 * worst[2], 1e3 * worst[3],
                 worst[4] / nparams, worst[5] / 2**20))
        print("# %s, reference optimizer: %s, %d parameters, %d ranks, batch %d per rank, %d iterations"
              % (args.mode, ref_name, nparams, size, args.batch, args.iters))
        print("mode,ranks,params,exchange_plus_step_ms,iteration_ms,forward_backward_ms,exchange_ms,"
              "state_bytes_per_param_per_rank,peak_rss_mib")
        print(line)
        if args.csv:
            new = not os.path.exists(args.csv)
            with open(args.csv, "a") as f:
                if new:
                    f.write("mode,ranks,params,exchange_plus_step_ms,iteration_ms,forward_backward_ms,exchange_ms,"
                            "state_bytes_per_param_per_rank,peak_rss_mib\n")
                f.write(line + "\n")
    if args.mode == "adampi":
        opt.close()
    else:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
