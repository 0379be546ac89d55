"""h5py (Debian's serial HDF5) and adampi (the parallel HDF5) in one process, imported in either
order: both keep working. Run without mpirun: python3 h5py_order.py h5py-first|adampi-first DIR"""
import os
import sys

order, workdir = sys.argv[1], sys.argv[2]
if order == "h5py-first":
    import h5py
    import adampi.torch as at
else:
    import adampi.torch as at
    import h5py
import numpy as np
import torch

own = os.path.join(workdir, "theirs.h5")
with h5py.File(own, "w") as f:  # the user's own file, before adampi writes anything
    f["x"] = np.arange(5, dtype=np.float32)
    f.attrs["optimizer"] = "adamp"

torch.manual_seed(0)
m = torch.nn.Linear(4, 3)
opt = at.AdamP(m.parameters(), lr=1e-2)
m.weight.grad, m.bias.grad = torch.ones(3, 4), torch.ones(3)
opt.step()
ck = os.path.join(workdir, "ck.h5")
opt.save(ck, user={"epoch": 1})

with h5py.File(ck, "r") as f:  # h5py reads adampi's checkpoint
    names = sorted(f["tensors"].keys())
    assert names == ["param0", "param1"], names
    w = np.asarray(f["tensors"]["param0"]["param"])
    assert np.array_equal(w, m.weight.detach().numpy()), "h5py reads other parameters than adampi saved"
with h5py.File(own, "r") as f:  # and its own file
    assert list(f["x"][:]) == [0, 1, 2, 3, 4] and f.attrs["optimizer"] == "adamp"
try:  # h5py's own errors still work after adampi's HDF5 calls
    h5py.File(os.path.join(workdir, "missing.h5"), "r")
    raise SystemExit("h5py opened a missing file")
except FileNotFoundError:
    pass
try:  # and adampi's
    opt.load(own)
    raise SystemExit("adampi loaded a file that is not a checkpoint")
except at.CheckpointError as e:
    assert "theirs.h5" in str(e), e
assert opt.load(ck) == {"epoch": 1}
opt.close()
print("%s: h5py %s (HDF5 %s) and adampi in one process: both work" % (order, h5py.__version__, h5py.version.hdf5_version))
