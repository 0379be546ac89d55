#!/usr/bin/python3
"""Fashion-MNIST in PyTorch with adampi.torch, under mpirun (launch/run -n 2 -p launch/torch_fmnist.py).

A small BatchNorm CNN (conv-bn-relu x2, then Linear-bn-relu and a classifier): the two conv weights
and the hidden Linear weight are scale-invariant. It is trained from the same initialisation and
the same data order with AdamW (AdamP with delta = 0: no projection) and AdamP, then SGD (SGDP with
delta = 0) and SGDP. Each rank takes its slice of every global batch; adampi's step averages the
gradients over the ranks (no DDP). BatchNorm uses each rank's slice (as DDP without SyncBatchNorm).

Prints a progress line every --every steps (loss, accuracy, samples/s, the norm of the
scale-invariant weights, tensors projected) and the test accuracy after each epoch; writes a CSV
and a PNG plot of the weight norms and test accuracies (default results/torch_fmnist.*).

--dtype bf16 trains a bfloat16 model (activations and gradients in bfloat16) with the core's fp32
master weights, initialised from the same fp32 model; --max-grad-norm clips by global norm.
"""
import argparse
import gzip
import os
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src", "python"))

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(path, kind):
    """An IDX file (gzip or plain) as bytes and its shape; a missing, corrupt or truncated file is an
    error naming the file."""
    if not os.path.exists(path):
        raise SystemExit("torch_fmnist: %s is missing (Debian: apt-get install dataset-fashion-mnist, or --data DIR)" % path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise SystemExit("torch_fmnist: %s cannot be read: %s" % (path, e))
    want = 0x803 if kind == "images" else 0x801
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != want:
        raise SystemExit("torch_fmnist: %s is not an IDX %s file" % (path, kind))
    dims = 3 if kind == "images" else 1
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    start, count = 4 + 4 * dims, 1
    for d in shape:
        count *= d
    if len(data) != start + count:
        raise SystemExit("torch_fmnist: %s is truncated or corrupt (%d bytes, expected %d)" % (path, len(data), start + count))
    return data[start:], shape


def load(data_dir, split, torch):
    prefix = "train" if split == "train" else "t10k"
    names = [os.path.join(data_dir, "%s-%s-idx%d-ubyte" % (prefix, k, 3 if k == "images" else 1)) for k in ("images", "labels")]
    names = [n + ".gz" if os.path.exists(n + ".gz") or not os.path.exists(n) else n for n in names]
    images, shape = read_idx(names[0], "images")
    labels, _ = read_idx(names[1], "labels")
    x = torch.frombuffer(bytearray(images), dtype=torch.uint8).reshape(shape[0], 1, shape[1], shape[2])
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    return (x.float() / 255.0 - 0.2860) / 0.3530, y


def make_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(32 * 5 * 5, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))


SCALE_INVARIANT = ("0.weight", "4.weight", "9.weight")


def run(name, args, torch, comm, data, log, csv_rows):
    from adampi.torch import AdamP, SGDP
    rank, size = comm.Get_rank(), comm.Get_size()
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(args.seed)
    model = make_model(torch)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    extra = dict(max_grad_norm=args.max_grad_norm)
    if dtype != torch.float32:  # the master starts from the fp32 initialisation, not its rounding
        extra["master_params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        model = model.to(dtype)
    named = list(model.named_parameters())
    decay = [(n, p) for n, p in named if p.dim() > 1]
    plain = [(n, p) for n, p in named if p.dim() <= 1]
    adam = name in ("adamw", "adamp")
    delta = 0.0 if name in ("adamw", "sgd") else 0.1
    groups = [{"params": decay, "weight_decay": args.wd if args.wd is not None else (1e-2 if adam else 5e-4)},
              {"params": plain, "weight_decay": 0.0}]
    if adam:
        opt = AdamP(groups, lr=args.lr or 1e-3, delta=delta, **extra)
    else:
        opt = SGDP(groups, lr=args.lr or 0.1, momentum=0.9, nesterov=True, delta=delta, **extra)
    invariant = [p for n, p in named if n in SCALE_INVARIANT]
    lossf = torch.nn.functional.cross_entropy
    n_train = xtr.shape[0]
    per_rank = args.batch // size
    step, t_start = 0, time.perf_counter()
    if rank == 0:
        csv_rows.append((name, 0, 0, "", float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in invariant))), ""))
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        seen = correct = 0
        t0 = time.perf_counter()
        for b in range(n_train // args.batch):
            idx = order[b * args.batch + rank * per_rank: b * args.batch + (rank + 1) * per_rank]
            x, y = xtr[idx].to(dtype), ytr[idx]
            opt.zero_grad()
            out = model(x)
            loss = lossf(out.float(), y)
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            correct += int((out.argmax(1) == y).sum())
            if step % args.every == 0:
                norm = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in invariant)))
                projected = sum(d["view"] != "none" for d in opt.diagnostics())
                stats = comm.allreduce((float(loss) * len(y), len(y), correct, seen))
                if rank == 0:
                    rate = args.batch * args.every / (time.perf_counter() - t0)
                    log("%-5s epoch %d step %5d  loss %.4f  acc %.3f  %6.0f samples/s  |w| %.3f  projected %d/%d"
                        % (name, epoch, step, stats[0] / stats[1], stats[2] / stats[3], rate, norm, projected,
                           len(named)))
                    csv_rows.append((name, epoch, step, stats[0] / stats[1], norm, ""))
                t0 = time.perf_counter()
        acc = evaluate(model, xte.to(dtype), yte, comm, torch)
        norm = float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in invariant)))
        if rank == 0:
            log("%-5s epoch %d done: test accuracy %.2f%%  |w| %.3f  (%.0f s)"
                % (name, epoch, 100 * acc, norm, time.perf_counter() - t_start))
            csv_rows.append((name, epoch, step, "", norm, acc))
    opt.close()
    return acc


def evaluate(model, x, y, comm, torch):
    """Test accuracy, each rank a slice of the test set."""
    model.eval()
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = rank * len(y) // size, (rank + 1) * len(y) // size
    with torch.no_grad():
        correct = int((model(x[lo:hi]).argmax(1) == y[lo:hi]).sum())
    return comm.allreduce(correct) / len(y)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing (Debian: python3-matplotlib): no plot"
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        a.plot([r[2] for r in mine], [r[4] for r in mine], label=name)
        ev = [r for r in mine if r[5] != ""]
        b.plot([r[1] for r in ev], [100 * r[5] for r in ev], marker="o", label=name)
    a.set_xlabel("step"), a.set_ylabel("norm of the scale-invariant weights"), a.legend()
    b.set_xlabel("epoch"), b.set_ylabel("test accuracy %"), b.legend()
    fig.suptitle("Fashion-MNIST, BatchNorm CNN, adampi.torch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opts", default="adamw,adamp,sgd,sgdp", help="comma-separated: adamw, adamp, sgd, sgdp")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="global batch (a multiple of the rank count)")
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (Adam family), 0.1 (SGD family)")
    ap.add_argument("--wd", type=float, default=None, help="default 1e-2 (Adam family), 5e-4 (SGD family)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--train-limit", type=int, default=0, help="use only the first N training images")
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="the model's dtype (bf16: fp32 master)")
    ap.add_argument("--max-grad-norm", type=float, default=0.0, help="global-norm clipping; 0: off")
    ap.add_argument("--csv", default="results/torch_fmnist.csv")
    ap.add_argument("--png", default="results/torch_fmnist.png")
    args = ap.parse_args()
    import torch
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    if args.batch % comm.Get_size():
        raise SystemExit("torch_fmnist: --batch %d is not a multiple of the %d ranks" % (args.batch, comm.Get_size()))
    names = args.opts.split(",")
    for n in names:
        if n not in ("adamw", "adamp", "sgd", "sgdp"):
            raise SystemExit("torch_fmnist: unknown optimizer %r in --opts" % n)
    train, test = load(args.data, "train", torch), load(args.data, "test", torch)
    if args.train_limit:
        train = (train[0][:args.train_limit], train[1][:args.train_limit])
    rank = comm.Get_rank()

    def log(line):
        print(line, flush=True)
    if rank == 0:
        log("torch_fmnist: %d ranks, global batch %d, %d training and %d test images, %d epochs, %s"
            % (comm.Get_size(), args.batch, len(train[1]), len(test[1]), args.epochs, args.dtype))
    rows, final = [], {}
    for n in names:
        final[n] = run(n, args, torch, comm, (train, test), log, rows)
    if rank == 0:
        for path in (args.csv, args.png):
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(args.csv, "w") as f:
            f.write("optimizer,epoch,step,train_loss,weight_norm,test_accuracy\n")
            for r in rows:
                f.write(",".join(str(v) for v in r) + "\n")
        note = plot(rows, args.png)
        log("final test accuracy: " + ", ".join("%s %.2f%%" % (n, 100 * a) for n, a in final.items()))
        log("wrote %s%s" % (args.csv, "; " + note if note else " and " + args.png))


if __name__ == "__main__":
    main()
