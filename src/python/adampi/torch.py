"""adampi for PyTorch: AdamP and SGDP as torch.optim optimizers over the C core, sharded over MPI.

    from adampi.torch import AdamP
    opt = AdamP(model.parameters(), lr=1e-3, weight_decay=1e-2)   # collective (mpi4py's COMM_WORLD)
    for x, y in loader:                                            # each rank its share of the batch
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()            # averages the gradients over the ranks, updates, shares: drop DDP

The classes take the official package's (adamp 0.3.0) arguments, defaults and parameter groups.
At construction the parameters move into the core's flat buffer (node-shared memory where the
system allows): every `p.data` and `p.grad` becomes a view of it, and rank 0's values are
broadcast so every rank starts equal. Each rank keeps the optimizer state of its shard only.

Parameters may be float32, bfloat16 or float16 (all the same dtype). With a 16-bit model the core
keeps an fp32 master copy of its shard and its state in fp32: each step converts the gradients
exactly to fp32, averages them in fp32, updates the master and writes it rounded to the model's
dtype into the parameters (PyTorch's usual mixed-precision recipe, without the copies).

Collective calls (every rank of `comm`, in the same order): the constructor, step, state_dict,
load_state_dict, set_master, master_params, save, load, close. A failure raises the same exception
with the same message on every rank and changes nothing; no rank is left waiting.
"""
import collections
import ctypes
import math
import re
import warnings

import numpy as np
import torch
from torch.optim.optimizer import Optimizer, required

from . import _lib
from ._lib import (AdampiError, ArgumentError, CheckpointError, HyperParameterError, MismatchError,  # noqa: F401
                   NonFiniteError, lib)

__all__ = ["AdamP", "SGDP", "LossScaler", "StepInfo", "round_to", "widen", "AdampiError", "NonFiniteError",
           "MismatchError", "CheckpointError"]

_BCAST_CHUNK = 1 << 24  # elements per broadcast message: counts stay far below 2^31
_RANK_FAILED = re.compile(r"\brank \d+ failed: ")
_DTYPES = {torch.float32: _lib.FLOAT32, torch.bfloat16: _lib.BFLOAT16, torch.float16: _lib.FLOAT16}

# What the last step did, the same on every rank: applied and skipped (a NaN or Inf under
# nonfinite="skip"), nonfinite (the name of the first parameter with a NaN or Inf, or None),
# grad_norm (global norm of the averaged, unscaled gradients before clipping, as
# torch.nn.utils.clip_grad_norm_ returns; NaN before any step exchanged statistics) and clip_coef
# (the factor the gradients were multiplied by; 1.0 when not clipped).
StepInfo = collections.namedtuple("StepInfo", "applied skipped nonfinite grad_norm clip_coef")


def _mpi():
    from mpi4py import MPI  # initialises MPI on first import
    return MPI


def _float_array(address, n):
    """A numpy float32 array over n floats at address (memory owned elsewhere)."""
    if n == 0:
        return np.zeros(0, np.float32)
    return np.ctypeslib.as_array(ctypes.cast(address, _lib.c_float_p), shape=(n,))


def _flat_tensor(address, n, dtype):
    """A torch tensor of n elements of dtype over memory at address (owned elsewhere). numpy has no
    bfloat16, so 16-bit buffers are made as int16 and viewed as the dtype (same size, no copy)."""
    if dtype == torch.float32:
        return torch.from_numpy(_float_array(address, n))
    a = np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_int16)), shape=(n,))
    return torch.from_numpy(a).view(dtype)


def _raw(t):
    """A numpy view of a contiguous tensor's bits (int16 for the 16-bit dtypes), for MPI."""
    return t.numpy() if t.dtype == torch.float32 else t.view(torch.int16).numpy()


def _fptr(t, offset=0):
    return ctypes.cast(t.data_ptr() + 4 * offset, _lib.c_float_p)


def round_to(t, dtype):
    """t (any floating tensor, converted to float32 first) rounded to dtype (torch.float32,
    torch.bfloat16 or torch.float16) by the core's adampi_round_to: round to nearest, ties to
    even, bit for bit torch's .bfloat16() / .half(). Local."""
    if dtype not in _DTYPES:
        raise TypeError("dtype %s is not float32, bfloat16 or float16" % (dtype,))
    src = t.detach().to("cpu", torch.float32).contiguous().reshape(-1)
    out = torch.empty(src.numel(), dtype=dtype)
    st = lib.adampi_round_to(_DTYPES[dtype], _fptr(src), out.data_ptr(), src.numel())
    if st != _lib.OK:
        raise _lib.error_class(st)(_lib.strerror(st), st)
    return out.view(t.shape)


def widen(t):
    """t (float32, bfloat16 or float16) converted exactly to float32 by the core's adampi_widen. Local."""
    if t.dtype not in _DTYPES:
        raise TypeError("dtype %s is not float32, bfloat16 or float16" % (t.dtype,))
    src = t.detach().cpu().contiguous().reshape(-1)
    out = torch.empty(src.numel(), dtype=torch.float32)
    st = lib.adampi_widen(_DTYPES[t.dtype], src.data_ptr(), _fptr(out), src.numel())
    if st != _lib.OK:
        raise _lib.error_class(st)(_lib.strerror(st), st)
    return out.view(t.shape)


def _check_max_grad_norm(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError("max_grad_norm = %r is invalid (must be a finite number >= 0; 0: no clipping)" % (value,))
    return float(value)


def _check_grad_scale(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError("grad_scale = %r is invalid (must be a finite number > 0: the loss scale times the "
                         "micro-batches accumulated)" % (value,))
    return float(value)


def _raise_first(comm, reports, local):
    """If some rank reported a Python-side failure (class, message), raise it here, as the lowest
    such rank's exception with its message prefixed by that rank; else return."""
    for r, rep in enumerate(reports):
        if rep is None:
            continue
        cls, msg = rep
        if not (isinstance(cls, type) and issubclass(cls, Exception)):
            cls = AdampiError
        text = msg if comm.Get_size() == 1 or msg.startswith("rank ") else "rank %d: %s" % (r, msg)
        try:
            err = cls(text)
        except Exception:  # an exception class that does not take one message
            err = AdampiError(text)
        if local is not None and r == comm.Get_rank():
            raise err from local
        raise err


def _agree(comm, exc):
    """Collective. Raise on every rank the exception of the lowest rank that has one (its class and
    message, prefixed with that rank), or return if no rank has one."""
    _raise_first(comm, comm.allgather(None if exc is None else (type(exc), str(exc))), exc)


def _bcast(comm, t):
    """Rank 0's values of the contiguous 1-d tensor t to every rank, in bounded messages. Collective."""
    raw = _raw(t)
    for a in range(0, raw.size, _BCAST_CHUNK):
        comm.Bcast(raw[a:a + _BCAST_CHUNK], root=0)


def _as_number(group, key, index):
    value = group[key]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("param group %d: %s = %r is not a number" % (index, key, value))
    return float(value)


class _ShardedOptimizer(Optimizer):
    """What AdamP and SGDP share: the handle, the flat buffers, the step and the state rules."""

    _kind = None
    _state_keys = ()

    def __init__(self, params, defaults, comm, reduce_gradients, nonfinite, threads, max_grad_norm=0.0,
                 master_params=None):
        MPI = _mpi()
        self._h = None
        self._ready = False
        comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(comm, MPI.Intracomm):
            raise TypeError("comm must be an mpi4py intra-communicator (or None for MPI.COMM_WORLD), not %r" % (comm,))
        self._comm = comm
        self._reduce = bool(reduce_gradients)
        local = None
        try:
            if nonfinite not in ("error", "skip"):
                raise ValueError("nonfinite = %r is invalid (must be 'error' or 'skip')" % (nonfinite,))
            if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1024:
                raise ValueError("threads = %r is invalid (must be an integer in 0..1024; 0: OpenMP's default)" % (threads,))
            max_grad_norm = _check_max_grad_norm(max_grad_norm)
            params, names = _split_names(params)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
                super().__init__(params, defaults)
            self._params, self._names = self._check_params(names)
            self._dtype = self._params[0].dtype if self._params else torch.float32
            self._hp_cache = [None] * len(self.param_groups)
            hps = [self._group_hparams(g, i) for i, g in enumerate(self.param_groups)]
        except Exception as e:  # noqa: BLE001: any local failure must reach every rank
            local = e
        _agree(comm, local)
        self._nonfinite = nonfinite
        self._max_grad_norm = max_grad_norm
        self._full32 = None
        self._create(hps, threads, max_grad_norm)
        if master_params is not None:
            try:
                self.set_master(master_params)
            except Exception:
                self.close()  # collective: every rank raised the same error
                raise

    # ---- construction ---------------------------------------------------------------------------

    def _check_params(self, names):
        params, seen, out_names = [], {}, []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                i = len(params)
                name = names.get(id(p), "param%d" % i)
                if id(p) in seen:
                    raise ValueError("parameter %d ('%s') is listed twice (also as parameter %d): each tensor "
                                     "may appear once in all parameter groups" % (i, name, seen[id(p)]))
                seen[id(p)] = i
                if p.dtype not in _DTYPES:
                    raise TypeError("parameter %d ('%s') is %s: adampi.torch takes float32, bfloat16 or float16 "
                                    "parameters" % (i, name, p.dtype))
                if params and p.dtype != params[0].dtype:
                    raise ValueError("parameters of mixed dtypes: parameter 0 ('%s') is %s, parameter %d ('%s') is %s; "
                                     "adampi.torch takes one dtype for all (float32, bfloat16 or float16)"
                                     % (out_names[0], params[0].dtype, i, name, p.dtype))
                if p.device.type != "cpu":
                    raise ValueError("parameter %d ('%s') is on %s: adampi.torch takes CPU tensors" % (i, name, p.device))
                if p.layout != torch.strided:
                    raise ValueError("parameter %d ('%s') has layout %s: adampi.torch takes dense tensors"
                                     % (i, name, p.layout))
                if p.dim() > _lib.MAX_NDIM:
                    raise ValueError("parameter %d ('%s') has %d dimensions (at most %d)" % (i, name, p.dim(), _lib.MAX_NDIM))
                if p.numel() == 0:
                    raise ValueError("parameter %d ('%s') has no elements (shape %s)" % (i, name, list(p.shape)))
                if len(name.encode()) > _lib.MAX_NAME or not name:
                    raise ValueError("parameter %d: name %r must have 1..%d bytes" % (i, name, _lib.MAX_NAME))
                params.append(p)
                out_names.append(name)
        if len(set(out_names)) != len(out_names):
            dup = next(n for n in out_names if out_names.count(n) > 1)
            raise ValueError("parameter name '%s' is used twice" % dup)
        return params, out_names

    def _create(self, hps, threads, max_grad_norm):
        MPI, comm = _mpi(), self._comm
        cfg = lib.adampi_config_defaults(self._kind)
        cfg.nonfinite = _lib.NONFINITE_SKIP if self._nonfinite == "skip" else _lib.NONFINITE_ERROR
        cfg.threads = threads
        cfg.dtype = _DTYPES[self._dtype]
        cfg.max_grad_norm = max_grad_norm
        h, errbuf = _lib.H(), ctypes.create_string_buffer(1024)
        st = lib.adampi_create(ctypes.c_void_p(MPI._handleof(comm)), ctypes.byref(cfg), ctypes.byref(h),
                               errbuf, len(errbuf))
        if st != _lib.OK:
            self._raise_collective(st, errbuf.value.decode(errors="replace"))
        self._h = h
        local = None
        try:
            for hp in hps:
                gid = ctypes.c_int()
                self._check(lib.adampi_add_group(h, ctypes.byref(hp), ctypes.byref(gid)))
            groups = [gi for gi, g in enumerate(self.param_groups) for _ in g["params"]]
            for p, name, gi in zip(self._params, self._names, groups):
                shape = (_lib.c_int64 * max(1, p.dim()))(*p.shape)
                self._check(lib.adampi_add_tensor(h, name.encode(), p.dim(), shape, gi, None))
        except Exception as e:  # noqa: BLE001
            local = e
        try:
            _agree(comm, local)
            self._collective(lib.adampi_commit(h))
            self._setup_buffers()
        except Exception:
            lib.adampi_free(ctypes.byref(h))  # collective: every rank is here, with the same error
            self._h = None
            raise
        self._ready = True

    def _setup_buffers(self):
        h, comm = self._h, self._comm
        n = int(lib.adampi_numel(h))
        lo, hi = _lib.c_int64(), _lib.c_int64()
        self._check(lib.adampi_shard(h, comm.Get_rank(), ctypes.byref(lo), ctypes.byref(hi)))
        self._lo, self._hi, self._numel = lo.value, hi.value, n
        pp, gp = ctypes.c_void_p(), ctypes.c_void_p()
        st = lib.adampi_alloc_step_buffers_ex(h, ctypes.byref(pp), ctypes.byref(gp))
        if st == _lib.OK:
            self._shared = True
            self._pflat = _flat_tensor(pp.value, n, self._dtype)
            self._gflat = _flat_tensor(gp.value, n, self._dtype)
        elif st in (_lib.ERR_NOMEM, _lib.ERR_IO):  # /dev/shm too small or absent: private buffers
            self._shared = False
            self._pflat, self._gflat = torch.zeros(n, dtype=self._dtype), torch.zeros(n, dtype=self._dtype)
        else:
            self._raise_collective(st)
        elem = self._pflat.element_size()
        self._pptr = ctypes.c_void_p(self._pflat.data_ptr())
        self._gptr = ctypes.c_void_p(self._gflat.data_ptr())
        self._pshard = ctypes.c_void_p(self._pflat.data_ptr() + elem * self._lo)
        self._gshard = ctypes.c_void_p(self._gflat.data_ptr() + elem * self._lo)
        self._pviews, self._gviews, self._offsets = [], [], []
        info = _lib.TensorInfo()
        for i, p in enumerate(self._params):
            self._check(lib.adampi_tensor(h, i, ctypes.byref(info)))
            off, cnt = info.offset, info.numel
            self._offsets.append((off, cnt))
            pv = self._pflat[off:off + cnt].view(p.shape)
            gv = self._gflat[off:off + cnt].view(p.shape)
            with torch.no_grad():
                pv.copy_(p.detach())
            self._pviews.append(pv)
            self._gviews.append(gv)
        # Every rank starts from rank 0's parameters.
        _bcast(comm, self._pflat)
        for p, pv, gv in zip(self._params, self._pviews, self._gviews):
            p.data = pv
            if p.grad is not None:
                gv.copy_(p.grad.detach())
                p.grad = gv
        self._pptrs = [v.data_ptr() for v in self._pviews]
        self._gptrs = [v.data_ptr() for v in self._gviews]

    def add_param_group(self, param_group):
        if getattr(self, "_ready", False):
            raise RuntimeError("%s: add_param_group after construction is not supported: the sharded layout "
                               "is fixed at construction; create the optimizer with all its groups"
                               % type(self).__name__)
        super().add_param_group(param_group)

    # ---- errors ---------------------------------------------------------------------------------

    def _check(self, st):
        """A local C call: raise its error here (the caller agrees before any collective)."""
        if st != _lib.OK:
            raise _lib.error_class(st)(_lib.last_error(self._h), st)

    def _collective(self, st):
        if st != _lib.OK:
            self._raise_collective(st)

    def _raise_collective(self, st, message=None, local=None):
        """After a collective call failed with status st on every rank: raise the same exception with
        the same message everywhere. The message is that of the rank where the failure began (the
        core tells the other ranks only "rank r failed"); a Python-side failure on some rank
        (local) takes precedence, as it is what made the call fail."""
        if message is None:
            message = _lib.last_error(self._h) if self._h else _lib.strerror(st)
        mine = None if local is None else (type(local), str(local))
        reports = self._comm.allgather((mine, message))
        _raise_first(self._comm, [loc for loc, _ in reports], local)
        msgs = [m for _, m in reports]
        text = next((m for m in msgs if not _RANK_FAILED.search(m)), msgs[0])
        raise _lib.error_class(st)(text, st)

    def _check_open(self):
        if self._h is None:
            raise RuntimeError("%s is closed" % type(self).__name__)

    # ---- hyper-parameters -----------------------------------------------------------------------

    def _group_hparams(self, group, index):
        hp = self._defaults_struct(group)
        for key in ("lr", "eps", "weight_decay", "delta", "wd_ratio"):
            setattr(hp, key, _as_number(group, key, index))
        nesterov = group["nesterov"]
        if isinstance(nesterov, torch.Tensor):
            nesterov = nesterov.item()
        if nesterov not in (0, 1) or isinstance(nesterov, float):
            raise ValueError("param group %d: nesterov = %r is invalid (must be True or False)" % (index, nesterov))
        hp.nesterov = int(bool(nesterov))
        self._kind_hparams(hp, group, index)
        msg = _lib.check_hparams(self._kind, hp)
        if msg is not None:
            raise HyperParameterError("param group %d: %s" % (index, msg), _lib.ERR_HPARAM)
        return hp

    def _sync_hparams(self):
        """Give the core the param_groups' current values (changed by the user or a scheduler).
        Local; a value that is invalid raises here and changes nothing in the core."""
        for gi, group in enumerate(self.param_groups):
            hp = self._group_hparams(group, gi)
            key = bytes(hp)
            if key != self._hp_cache[gi]:
                self._check(lib.adampi_set_hparams(self._h, gi, ctypes.byref(hp)))
                self._hp_cache[gi] = key

    # ---- the step -------------------------------------------------------------------------------

    def _gather_grads(self):
        """Local: the has_grad mask, with gradients replaced by new tensors copied into the flat
        buffer (and parameters re-pointed if the user replaced p.data)."""
        has = bytearray(len(self._params))
        for i, p in enumerate(self._params):
            if p.data_ptr() != self._pptrs[i] or p.shape != self._pviews[i].shape:
                self._adopt_param(i, p)
            g = p.grad
            if g is None:
                continue
            has[i] = 1
            if g.layout != torch.strided or g.data_ptr() != self._gptrs[i] or g.shape != p.shape:
                if g.dtype != self._dtype or g.device.type != "cpu" or g.layout != torch.strided:
                    raise TypeError("gradient of parameter %d ('%s') is %s on %s (%s): it must be a dense %s "
                                    "CPU tensor" % (i, self._names[i], g.dtype, g.device, g.layout, self._dtype))
                if g.shape != p.shape:
                    raise ValueError("gradient of parameter %d ('%s') has shape %s, the parameter %s"
                                     % (i, self._names[i], list(g.shape), list(p.shape)))
                self._gviews[i].copy_(g.detach())
                p.grad = self._gviews[i]
        return bytes(has)

    def _adopt_param(self, i, p):
        if p.shape != self._pviews[i].shape or p.dtype != self._dtype or p.device.type != "cpu":
            raise ValueError("parameter %d ('%s') was replaced by a tensor of shape %s, %s on %s; the optimizer "
                             "needs shape %s, %s on cpu" % (i, self._names[i], list(p.shape), p.dtype, p.device,
                                                           list(self._pviews[i].shape), self._dtype))
        with torch.no_grad():
            self._pviews[i].copy_(p.detach())
        p.data = self._pviews[i]

    @torch.no_grad()
    def step(self, closure=None, grad_scale=1.0):
        """One optimizer step. Collective. With reduce_gradients=True (the default) each rank's
        gradients are averaged over the ranks first (no DDP needed); with False they are taken as
        already averaged. The gradients are then divided by grad_scale (the loss scale times the
        micro-batches accumulated; every rank the same) and clipped to max_grad_norm if set.
        Tensors whose .grad is None are not touched. On a NaN or Inf: NonFiniteError on every rank
        with nothing changed, or, with nonfinite="skip", a skipped step on every rank (counted in
        steps_skipped, told by last_step.skipped)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._check_open()
        local = None
        try:
            scale = _check_grad_scale(grad_scale)
            self._sync_hparams()
            has = self._gather_grads()
        except Exception as e:  # noqa: BLE001: fail the collective step on every rank instead
            local, has, scale = e, bytes([2]) * len(self._params), math.nan
        h = self._h
        # A local failure makes this rank pass NULL buffers, an impossible mask and a NaN scale:
        # the core's argument check then fails the step on every rank, inside the step's own
        # agreement.
        opts = lib.adampi_step_defaults()
        opts.has_grad, opts.grad_scale = has, scale
        if self._reduce:
            st = lib.adampi_step_ex(h, None if local else self._pptr, self._gptr, ctypes.byref(opts))
        else:
            before = lib.adampi_steps_taken(h)
            st = lib.adampi_step_sharded_ex(h, None if local else self._pshard, None if local else self._gshard,
                                            ctypes.byref(opts))
            if st == _lib.OK and lib.adampi_steps_taken(h) != before:
                st = self._share_params()
        if st != _lib.OK or local is not None:
            self._raise_collective(st if st != _lib.OK else _lib.ERR_ARG, local=local)
        return loss

    def _share_params(self):
        """After a sharded step: every rank's shard of the parameters to every rank. Collective.
        adampi_allgather moves floats, so a 16-bit model gathers the fp32 master and rounds it."""
        if self._dtype == torch.float32:
            return lib.adampi_allgather(self._h, ctypes.cast(self._pptr, _lib.c_float_p))
        full = self._master_buffer()
        st = lib.adampi_allgather(self._h, _fptr(full))
        if st == _lib.OK:
            st = lib.adampi_round_to(_DTYPES[self._dtype], _fptr(full), self._pptr, self._numel)
        return st

    def _master_buffer(self):
        """A private fp32 buffer of the flat size holding this rank's shard of the master (the
        widened parameters if the core has made no master yet). Local."""
        if self._full32 is None:
            self._full32 = torch.empty(self._numel, dtype=torch.float32)
        full, lo, hi = self._full32, self._lo, self._hi
        if hi > lo:
            shard = lib.adampi_master_shard(self._h)
            if shard:
                full[lo:hi] = torch.from_numpy(_float_array(ctypes.addressof(shard.contents), hi - lo))
            else:
                full[lo:hi] = widen(self._pflat[lo:hi])
        return full

    @property
    def last_step(self):
        """What the last step did (a StepInfo), the same on every rank. Local."""
        self._check_open()
        info = _lib.StepInfo()
        self._check(lib.adampi_last_step(self._h, ctypes.byref(info)))
        k = info.nonfinite_tensor
        return StepInfo(bool(info.applied), bool(info.skipped), self._names[k] if 0 <= k < len(self._names) else None,
                        float(info.grad_norm), float(info.clip_coef))

    @property
    def max_grad_norm(self):
        """Global-norm clipping of the averaged, unscaled gradients (torch.nn.utils.clip_grad_norm_);
        0: off. Settable (every rank the same value, from the next step); a negative or
        non-finite value raises ValueError and changes nothing."""
        return self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._check_open()
        value = _check_max_grad_norm(value)
        self._check(lib.adampi_set_max_grad_norm(self._h, value))
        self._max_grad_norm = value

    @property
    def dtype(self):
        """The parameters' dtype: torch.float32, torch.bfloat16 or torch.float16."""
        return self._dtype

    # ---- the fp32 master of a 16-bit model ------------------------------------------------------

    def master_params(self):
        """The fp32 master weights, one new tensor per parameter (in the optimizer's order), on every
        rank. For a float32 model: copies of the parameters. Collective."""
        self._check_open()
        full = self._gather_master()
        return [full[off:off + cnt].view(p.shape).clone() for p, (off, cnt) in zip(self._params, self._offsets)]

    def _gather_master(self):
        if self._dtype == torch.float32:
            return self._pflat.clone()
        full = self._master_buffer()
        self._collective(lib.adampi_allgather(self._h, _fptr(full)))
        return full.clone()

    def set_master(self, values):
        """Set the fp32 master weights (for a 16-bit model initialised in fp32) and the parameters to
        them rounded to the model's dtype. values: one tensor per parameter in the optimizer's order,
        (name, tensor) pairs, or a dict of names to tensors (e.g. an fp32 model's parameters,
        named_parameters() or state_dict()); any floating dtype, converted to float32. Rank 0's
        values are used. For a float32 model this sets the parameters. Collective; a wrong count,
        name or shape, or a NaN or Inf, raises on every rank and changes nothing."""
        self._check_open()
        local = full = None
        try:
            full = self._stage_master(values)
        except Exception as e:  # noqa: BLE001
            local = e
        _agree(self._comm, local)
        _bcast(self._comm, full)
        self._apply_master(full)

    def _apply_master(self, full):
        self._collective(lib.adampi_set_master(self._h, _fptr(full), _lib.PARAMS_FULL, self._pptr))

    def _stage_master(self, values, what="master value"):
        """Local: a full fp32 flat buffer from the user's per-parameter values."""
        if isinstance(values, torch.Tensor):
            raise TypeError("master values must be one tensor per parameter (a list, pairs or a dict), not a tensor")
        if isinstance(values, dict):
            missing = [n for n in self._names if n not in values]
            if missing and len(values) == len(self._names) and all(isinstance(k, int) for k in values):
                values = [values[k] for k in sorted(values)]  # a state dict's index keys
            elif missing:
                raise ValueError("no %s for parameter '%s'" % (what, missing[0]))
            else:
                values = [values[n] for n in self._names]
        else:
            values = [v[1] if isinstance(v, tuple) and len(v) == 2 else v for v in values]
        if len(values) != len(self._params):
            raise ValueError("%d %ss for %d parameters" % (len(values), what, len(self._params)))
        full = torch.empty(self._numel, dtype=torch.float32)
        for i, (v, p, (off, cnt)) in enumerate(zip(values, self._params, self._offsets)):
            if not isinstance(v, torch.Tensor) or not v.is_floating_point() or tuple(v.shape) != tuple(p.shape):
                raise ValueError("%s of parameter %d ('%s') is %s, the parameter has shape %s" % (
                    what, i, self._names[i], "%s of shape %s" % (v.dtype, list(v.shape)) if isinstance(v, torch.Tensor)
                    else type(v).__name__, list(p.shape)))
            full[off:off + cnt] = v.detach().to("cpu", torch.float32).reshape(-1)
        return full

    def zero_grad(self, set_to_none=False):
        """Zero every gradient in place (one pass over the flat buffer), or set each .grad to None."""
        self._check_open()
        for i, p in enumerate(self._params):
            g = p.grad
            if g is None:
                continue
            if set_to_none:
                p.grad = None
            elif g.data_ptr() != self._gptrs[i]:
                if g.grad_fn is not None:
                    g.detach_()
                else:
                    g.requires_grad_(False)
                g.zero_()
        if not set_to_none:
            self._gflat.zero_()

    # ---- state ----------------------------------------------------------------------------------

    @property
    def steps_taken(self):
        return int(lib.adampi_steps_taken(self._h))

    @property
    def steps_skipped(self):
        return int(lib.adampi_steps_skipped(self._h))

    @property
    def shard(self):
        """(lo, hi): this rank's part of the flat buffer."""
        return self._lo, self._hi

    @property
    def flat_params(self):
        """The flat parameter buffer (every p.data is a view of it)."""
        return self._pflat

    @property
    def uses_shared_buffers(self):
        return self._shared

    def state_dict(self):
        """The whole state, on every rank, in the official package's format: 'state' maps a parameter
        index to {'step', 'exp_avg', 'exp_avg_sq'} (AdamP) or {'step', 'momentum'} (SGDP), for the
        parameters that have taken a step; 'param_groups' holds the official keys. An extra key
        'adampi' holds the handle's counters and, for a 16-bit model, 'dtype' and 'master': the fp32
        master weights of every parameter index (what resuming needs: the parameters are only
        their rounding). Collective."""
        self._check_open()
        h, n = self._h, self._numel
        local = None
        try:
            fulls = [torch.empty(n) for _ in self._state_keys]
        except Exception as e:  # noqa: BLE001
            local = e
        _agree(self._comm, local)
        for (kind, _), full in zip(self._state_keys, fulls):
            shard = lib.adampi_state_shard(h, kind)
            if self._hi > self._lo:
                full[self._lo:self._hi] = torch.from_numpy(_float_array(ctypes.addressof(shard.contents),
                                                                        self._hi - self._lo))
            self._collective(lib.adampi_allgather(h, ctypes.cast(full.data_ptr(), _lib.c_float_p)))
        state = {}
        for i, p in enumerate(self._params):
            step = int(lib.adampi_tensor_step(h, i))
            if step == 0:
                continue
            off, cnt = self._offsets[i]
            entry = {"step": step}
            for (_, key), full in zip(self._state_keys, fulls):
                entry[key] = full[off:off + cnt].view(p.shape)
            state[i] = entry
        groups, index = [], 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = list(range(index, index + len(g["params"])))
            index += len(g["params"])
            groups.append(packed)
        extra = {"steps_taken": self.steps_taken, "steps_skipped": self.steps_skipped, "names": list(self._names)}
        if self._dtype != torch.float32:
            master = self._gather_master()
            extra["dtype"] = str(self._dtype).replace("torch.", "")
            extra["master"] = {i: master[off:off + cnt].view(p.shape)
                               for i, (p, (off, cnt)) in enumerate(zip(self._params, self._offsets))}
        return {"state": state, "param_groups": groups, "adampi": extra}

    def load_state_dict(self, state_dict):
        """Take a state dict from the official package or from adampi, made on any number of ranks.
        Master weights in it (a 16-bit model's) become the master and the parameters (rounded to
        the model's dtype; a float32 model takes them as its parameters); without them a 16-bit
        model's master restarts from its current parameters.
        Collective; validated before anything changes (shapes, counters, hyper-parameters, finite
        values, a non-negative exp_avg_sq), and on error nothing changes on any rank."""
        self._check_open()
        local = staged = None
        try:
            staged = self._stage(state_dict)
        except Exception as e:  # noqa: BLE001
            local = e
        _agree(self._comm, local)
        arrays, steps, taken, skipped, new_groups, hps, master = staged
        keep = []  # the numpy arrays must outlive the call

        def ptr(a):
            keep.append(a)
            return a.ctypes.data_as(_lib.c_float_p) if a is not None and a.size else None
        sin = _lib.StateIn()
        for (kind, key), a in zip(self._state_keys, arrays):
            setattr(sin, key, ptr(a))
        steps_arr = (_lib.c_int64 * max(1, len(steps)))(*steps)
        sin.tensor_steps = ctypes.cast(steps_arr, _lib.c_int64_p)
        sin.steps_taken, sin.steps_skipped = taken, skipped
        self._collective(lib.adampi_set_state(self._h, ctypes.byref(sin)))
        # The master was checked finite in _stage, so this cannot refuse (only an MPI failure could).
        if master is not None:
            self._apply_master(master)
        elif self._dtype != torch.float32:  # a state dict without master weights: from the parameters
            self._apply_master(widen(self._pflat))
        for g, new in zip(self.param_groups, new_groups):
            g.update(new)
        for gi, hp in enumerate(hps):
            self._check(lib.adampi_set_hparams(self._h, gi, ctypes.byref(hp)))
            self._hp_cache[gi] = bytes(hp)

    def _stage(self, sd):
        if not isinstance(sd, dict) or "state" not in sd or "param_groups" not in sd:
            raise ValueError("a state dict needs the keys 'state' and 'param_groups'")
        saved_groups = sd["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has %d parameter groups, the optimizer %d"
                             % (len(saved_groups), len(self.param_groups)))
        ids, new_groups, hps = {}, [], []
        for gi, (g, sg) in enumerate(zip(self.param_groups, saved_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise ValueError("loaded state dict's parameter group %d has %d parameters, the optimizer's %d"
                                 % (gi, len(sg["params"]), len(g["params"])))
            for k in sg["params"]:
                ids[k] = len(ids)
            new = {k: v for k, v in sg.items() if k != "params"}
            merged = dict(g)
            merged.update(new)
            hps.append(self._group_hparams(merged, gi))
            new_groups.append(new)
        lo, hi = self._lo, self._hi
        arrays = [np.zeros(hi - lo, np.float32) for _ in self._state_keys]
        steps = [0] * len(self._params)
        for k, entry in sd["state"].items():
            if k not in ids:
                raise ValueError("state dict entry %r names no parameter of the optimizer" % (k,))
            i = ids[k]
            p = self._params[i]
            if not isinstance(entry, dict):
                raise ValueError("state of parameter %d ('%s') is not a dict" % (i, self._names[i]))
            steps[i] = self._entry_step(entry, i)
            off, cnt = self._offsets[i]
            a, b = max(off, lo), min(off + cnt, hi)
            for (_, key), arr in zip(self._state_keys, arrays):
                if key not in entry:
                    raise ValueError("state of parameter %d ('%s') lacks '%s'" % (i, self._names[i], key))
                t = entry[key]
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
                    raise ValueError("state '%s' of parameter %d ('%s') has shape %s, the parameter %s" % (
                        key, i, self._names[i], list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__,
                        list(p.shape)))
                if not (t.is_floating_point()):
                    raise ValueError("state '%s' of parameter %d ('%s') is %s, not floating point"
                                     % (key, i, self._names[i], t.dtype))
                if b > a:
                    flat = t.detach().to("cpu", torch.float32).reshape(-1)
                    arr[a - lo:b - lo] = flat[a - off:b - off].numpy()
        extra = sd.get("adampi", {})
        taken = int(extra.get("steps_taken", max(steps) if steps else 0))
        skipped = int(extra.get("steps_skipped", 0))
        master = extra.get("master", None)
        if master is not None:
            if not isinstance(master, dict) or set(master) != set(range(len(self._params))):
                raise ValueError("state dict's adampi master must map every parameter index 0..%d to a tensor"
                                 % (len(self._params) - 1))
            master = self._stage_master(master, "master weight")
            if not bool(torch.isfinite(master).all()):
                i = next(i for i, (off, cnt) in enumerate(self._offsets)
                         if not bool(torch.isfinite(master[off:off + cnt]).all()))
                raise NonFiniteError("state dict's master weight of parameter %d ('%s') holds NaN or Inf; nothing "
                                     "was changed" % (i, self._names[i]), _lib.ERR_NONFINITE)
        return arrays, steps, taken, skipped, new_groups, hps, master

    def _entry_step(self, entry, i):
        step = entry.get("step", None)
        if step is None:
            return self._missing_step(entry, i)
        if isinstance(step, torch.Tensor) and step.numel() == 1:
            step = step.item()
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step) or step < 0:
            raise ValueError("state of parameter %d ('%s'): step = %r is not a non-negative integer"
                             % (i, self._names[i], step))
        return int(step)

    def _missing_step(self, entry, i):
        raise ValueError("state of parameter %d ('%s') lacks 'step'" % (i, self._names[i]))

    # ---- checkpoints ----------------------------------------------------------------------------

    def save(self, path, user=None, keep_last=0):
        """Write the core's HDF5 checkpoint (parameters, state, counters, hyper-parameters and the
        small integers of `user`, e.g. {'epoch': 3}) to path, atomically. Collective. A file saved
        on N ranks loads on any number of ranks."""
        self._check_open()
        local = None
        try:
            self._sync_hparams()
            u = _user_struct(user)
            if isinstance(keep_last, bool) or not isinstance(keep_last, int) or not 0 <= keep_last <= 1000:
                raise ValueError("keep_last = %r is invalid (must be an integer in 0..1000)" % (keep_last,))
            path_b = _path_bytes(path)
        except Exception as e:  # noqa: BLE001
            local = e
        _agree(self._comm, local)
        opts = lib.adampi_save_defaults()
        opts.params, opts.keep_last = _lib.PARAMS_FULL, keep_last
        opts.user = ctypes.pointer(u) if u is not None else None
        self._collective(lib.adampi_save(self._h, path_b, self._pptr, ctypes.byref(opts)))

    def load(self, path):
        """Load a checkpoint written by save (or by the C library) on any number of ranks: parameters,
        state, counters and hyper-parameters (param_groups take the file's values). Returns the
        file's user dict. Collective; on error nothing changes."""
        self._check_open()
        local = None
        try:
            path_b = _path_bytes(path)
        except Exception as e:  # noqa: BLE001
            local = e
        _agree(self._comm, local)
        u = _lib.User()
        opts = lib.adampi_load_defaults()
        opts.params, opts.keep_hparams, opts.user = _lib.PARAMS_FULL, 0, ctypes.pointer(u)
        self._collective(lib.adampi_load(self._h, path_b, self._pptr, ctypes.byref(opts)))
        hp = _lib.Hparams()
        for gi, group in enumerate(self.param_groups):
            self._check(lib.adampi_get_hparams(self._h, gi, ctypes.byref(hp)))
            self._update_group(group, hp)
            self._hp_cache[gi] = bytes(self._group_hparams(group, gi))
        return {u.name[k].value.decode(): int(u.value[k]) for k in range(u.count)}

    def _update_group(self, group, hp):
        for key in ("lr", "eps", "weight_decay", "delta", "wd_ratio"):
            group[key] = getattr(hp, key)
        group["nesterov"] = bool(hp.nesterov)

    # ---- diagnostics ----------------------------------------------------------------------------

    def diagnostics(self):
        """Per parameter, what the core reports of the last step that updated it: the view that
        projected it ('none', 'channel' or 'layer'), the cosines, the norms and the step counter."""
        self._check_open()
        out, d = [], _lib.Diag()
        for i in range(len(self._params)):
            self._check(lib.adampi_diag_get(self._h, i, ctypes.byref(d)))
            out.append({"name": self._names[i], "updated": bool(d.updated), "view": _lib.VIEWS.get(d.view, "none"),
                        "cos_channel": d.cos_channel, "cos_layer": d.cos_layer, "weight_norm": d.weight_norm,
                        "grad_norm": d.grad_norm, "step": int(d.step)})
        return out

    def profile(self):
        """Where the last step's time went on this rank (seconds per phase) and the bytes the core holds."""
        self._check_open()
        pr = _lib.Profile()
        self._check(lib.adampi_get_profile(self._h, ctypes.byref(pr)))
        out = {name: pr.seconds[k] for k, name in enumerate(_lib.PHASES)}
        out.update(exchange_bytes=pr.exchange_bytes, gradient_bytes=pr.gradient_bytes,
                   allocated_bytes=pr.allocated_bytes, buffer_bytes=pr.buffer_bytes, master_bytes=pr.master_bytes)
        return out

    def close(self):
        """Release the core's handle and buffers. Collective. The parameters (and gradients) are
        copied into private memory first, so the model stays usable."""
        if self._h is None:
            return
        for p in self._params:
            p.data = p.data.clone()
            if p.grad is not None:
                p.grad = p.grad.clone()
        self._pflat = self._gflat = None
        self._pviews = self._gviews = []
        lib.adampi_free(ctypes.byref(self._h))
        self._h = None

    def __getstate__(self):
        raise TypeError("%s cannot be pickled or copied: use state_dict() or save()" % type(self).__name__)

    def __repr__(self):
        text = super().__repr__()
        if self._h is None:
            return text
        return text[:-1] + "adampi: %d ranks, shard [%d, %d) of %d elements\n)" % (
            self._comm.Get_size(), self._lo, self._hi, self._numel)


class AdamP(_ShardedOptimizer):
    """AdamP (official package 0.3.0's arguments and defaults), sharded over the ranks of comm.

    Keywords beyond the official ones: comm (an mpi4py communicator, default MPI.COMM_WORLD),
    reduce_gradients (average .grad over the ranks in step; False if DDP already does),
    nonfinite ('error' or 'skip'), threads (OpenMP threads per rank; results do not depend on it),
    max_grad_norm (global-norm clipping as torch.nn.utils.clip_grad_norm_; 0: off), master_params
    (fp32 initial values of a 16-bit model's master weights: see set_master)."""

    _kind = _lib.ADAMP
    _state_keys = ((_lib.STATE_EXP_AVG, "exp_avg"), (_lib.STATE_EXP_AVG_SQ, "exp_avg_sq"))

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, delta=0.1,
                 wd_ratio=0.1, nesterov=False, *, comm=None, reduce_gradients=True, nonfinite="error", threads=1,
                 max_grad_norm=0.0, master_params=None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                        nesterov=nesterov)
        super().__init__(params, defaults, comm, reduce_gradients, nonfinite, threads, max_grad_norm, master_params)

    def _defaults_struct(self, group):
        return lib.adampi_adamp_defaults()

    def _kind_hparams(self, hp, group, index):
        betas = group["betas"]
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError("param group %d: betas = %r is invalid (must be a pair)" % (index, betas)) from None
        hp.beta1 = _as_number({"betas[0]": b1}, "betas[0]", index)
        hp.beta2 = _as_number({"betas[1]": b2}, "betas[1]", index)

    def _update_group(self, group, hp):
        super()._update_group(group, hp)
        group["betas"] = (hp.beta1, hp.beta2)


class SGDP(_ShardedOptimizer):
    """SGDP (official package 0.3.0's arguments and defaults), sharded over the ranks of comm.
    Same extra keywords as AdamP."""

    _kind = _lib.SGDP
    _state_keys = ((_lib.STATE_MOMENTUM, "momentum"),)

    def __init__(self, params, lr=required, momentum=0, dampening=0, weight_decay=0, nesterov=False, eps=1e-8,
                 delta=0.1, wd_ratio=0.1, *, comm=None, reduce_gradients=True, nonfinite="error", threads=1,
                 max_grad_norm=0.0, master_params=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, eps=eps, delta=delta, wd_ratio=wd_ratio)
        super().__init__(params, defaults, comm, reduce_gradients, nonfinite, threads, max_grad_norm, master_params)

    def _defaults_struct(self, group):
        return lib.adampi_sgdp_defaults(0.0)

    def _kind_hparams(self, hp, group, index):
        hp.momentum = _as_number(group, "momentum", index)
        hp.dampening = _as_number(group, "dampening", index)

    def _missing_step(self, entry, i):
        # The official SGDP keeps no step counter; SGDP's maths does not use it. A momentum buffer
        # means at least one step was taken.
        return 1

    def _update_group(self, group, hp):
        super()._update_group(group, hp)
        group["momentum"], group["dampening"] = hp.momentum, hp.dampening


class LossScaler:
    """Dynamic loss scaling for float16 (or bfloat16) models with torch.cuda.amp.GradScaler's rules,
    kept by the core (adampi_loss_scaler): start at init_scale (2^16), halve after a skipped step,
    double after growth_interval (2000) applied steps in a row. The optimizer must be made with
    nonfinite="skip": an overflowed step is then skipped on every rank and the scale lowered.

        scaler = LossScaler()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)      # opt.step(grad_scale=scale): the core unscales, clips, steps or skips

    With gradient accumulation over k micro-batches (each loss a mean), pass accumulation=k."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        s = lib.adampi_loss_scaler_defaults()
        for key, value, ok in (("init_scale", init_scale, lambda v: v > 0),
                               ("growth_factor", growth_factor, lambda v: v >= 1),
                               ("backoff_factor", backoff_factor, lambda v: 0 < v <= 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not ok(value):
                raise ValueError("%s = %r is invalid" % (key, value))
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, int) or growth_interval < 1:
            raise ValueError("growth_interval = %r is invalid (must be an integer >= 1)" % (growth_interval,))
        s.scale, s.growth_factor, s.backoff_factor = float(init_scale), float(growth_factor), float(backoff_factor)
        s.growth_interval, s.good_steps = growth_interval, 0
        self._s = s

    def get_scale(self):
        """The current loss scale."""
        return self._s.scale

    def scale(self, loss):
        """loss times the current scale (call .backward() on it)."""
        return loss * self._s.scale

    def step(self, optimizer, closure=None, accumulation=1):
        """optimizer.step(closure, grad_scale=scale * accumulation), then update() from
        optimizer.last_step.skipped. Collective (the optimizer's step). Returns the closure's loss."""
        if getattr(optimizer, "_nonfinite", None) != "skip":
            raise ValueError("LossScaler needs an optimizer made with nonfinite='skip' (an overflow must skip "
                             "the step, not raise)")
        if isinstance(accumulation, bool) or not isinstance(accumulation, int) or accumulation < 1:
            raise ValueError("accumulation = %r is invalid (must be an integer >= 1)" % (accumulation,))
        loss = optimizer.step(closure, grad_scale=self._s.scale * accumulation)
        self.update(optimizer.last_step.skipped)
        return loss

    def update(self, skipped):
        """After a step: lower the scale if it was skipped, else count it (and maybe grow)."""
        lib.adampi_loss_scaler_update(ctypes.byref(self._s), int(bool(skipped)))

    def state_dict(self):
        s = self._s
        return {"scale": s.scale, "growth_factor": s.growth_factor, "backoff_factor": s.backoff_factor,
                "growth_interval": int(s.growth_interval), "good_steps": int(s.good_steps)}

    def load_state_dict(self, sd):
        new = LossScaler(sd["scale"], sd["growth_factor"], sd["backoff_factor"], sd["growth_interval"])
        new._s.good_steps = int(sd["good_steps"])
        self._s = new._s

    def __repr__(self):
        return "LossScaler(scale=%g, good_steps=%d)" % (self._s.scale, self._s.good_steps)


def _split_names(params):
    """Accept torch's forms (tensors, or dicts of groups) and also (name, tensor) pairs, as
    model.named_parameters() yields: returns the params without names and {id(tensor): name}."""
    if isinstance(params, torch.Tensor):
        raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                        "but got " + torch.typename(params))
    params = list(params)
    names = {}

    def strip(seq):
        out = []
        for item in seq:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) \
                    and isinstance(item[1], torch.Tensor):
                names[id(item[1])] = item[0]
                out.append(item[1])
            else:
                out.append(item)
        return out
    if params and isinstance(params[0], dict):
        groups = []
        for g in params:
            g = dict(g)
            ps = g["params"]
            g["params"] = strip([ps] if isinstance(ps, torch.Tensor) else list(ps))
            groups.append(g)
        return groups, names
    return strip(params), names


def _user_struct(user):
    if user is None:
        return None
    if not isinstance(user, dict):
        raise TypeError("user must be a dict of names to integers, not %s" % type(user).__name__)
    if len(user) > _lib.USER_MAX:
        raise ValueError("user holds %d values (at most %d)" % (len(user), _lib.USER_MAX))
    u = _lib.User()
    for k, (name, value) in enumerate(user.items()):
        if not isinstance(name, str) or not 1 <= len(name.encode()) < _lib.USER_NAME or "/" in name:
            raise ValueError("user name %r is invalid (1..%d bytes, no '/')" % (name, _lib.USER_NAME - 1))
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not -2**63 <= int(value) < 2**63:
            raise ValueError("user value %s = %r is not a 64-bit integer" % (name, value))
        u.name[k].value = name.encode()
        u.value[k] = int(value)
    u.count = len(user)
    return u


def _path_bytes(path):
    import os
    p = os.fsencode(os.fspath(path))
    if not p:
        raise ValueError("the checkpoint path is empty")
    return p
