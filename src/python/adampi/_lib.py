"""ctypes binding of libadampi: where the library is found, the C structs, the prototypes, and the
mapping of a status to a Python exception.

This module is the only place that knows the C ABI (include/adampi.h). It holds no maths: every
number comes from the C core.
"""
import ctypes
import os

# ---- finding the library ------------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """Where libadampi is looked for, in order: $ADAMPI_LIBRARY, next to this package (an
    installed package), the checkout's build/ (PYTHONPATH=src/python after cmake --build build)."""
    env = os.environ.get("ADAMPI_LIBRARY")
    if env:
        return [("ADAMPI_LIBRARY", env)]
    root = os.path.normpath(os.path.join(_HERE, "..", "..", ".."))
    return [("next to the package", os.path.join(_HERE, "libadampi.so")),
            ("the checkout's build", os.path.join(root, "build", "lib", "libadampi.so"))]


def _load():
    tried = []
    for where, path in _candidates():
        if not os.path.exists(path):
            tried.append("%s (%s): no such file" % (path, where))
            continue
        try:
            # RTLD_LOCAL (ctypes' default): libadampi's parallel HDF5 stays out of the global
            # scope, so h5py's serial HDF5 in the same process keeps its own symbols.
            return ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL), path
        except OSError as e:
            tried.append("%s (%s): %s" % (path, where, e))
    raise ImportError("adampi: cannot load libadampi; tried " + "; ".join(tried) +
                      ". Build it (cmake -S . -B build && cmake --build build) or set ADAMPI_LIBRARY "
                      "to the path of libadampi.so")


lib, LIBRARY_PATH = _load()

# ---- the C types --------------------------------------------------------------------------------

c_int, c_int64, c_double, c_char_p, c_void_p, c_size_t = (ctypes.c_int, ctypes.c_int64, ctypes.c_double,
                                                          ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
c_float_p = ctypes.POINTER(ctypes.c_float)
c_int64_p = ctypes.POINTER(ctypes.c_int64)

OK, ERR_ARG, ERR_HPARAM, ERR_STATE, ERR_MISMATCH, ERR_NONFINITE, ERR_NOMEM, ERR_MPI, ERR_IO, ERR_FORMAT, \
    ERR_PEER = range(11)
ADAMP, SGDP = 0, 1
NONFINITE_ERROR, NONFINITE_SKIP = 0, 1
VIEWS = {0: "none", 1: "channel", 2: "layer"}
STATE_EXP_AVG, STATE_EXP_AVG_SQ, STATE_MOMENTUM = 0, 1, 2
PARAMS_SHARD, PARAMS_FULL = 0, 1
MAX_NDIM, MAX_NAME, USER_MAX, USER_NAME = 8, 255, 32, 48
NUM_PHASES = 5
FLOAT32, BFLOAT16, FLOAT16 = 0, 1, 2
PHASES = ("reduce_scatter", "stats", "exchange", "update", "allgather")


class Hparams(ctypes.Structure):
    _fields_ = [("lr", c_double), ("beta1", c_double), ("beta2", c_double), ("eps", c_double),
                ("weight_decay", c_double), ("delta", c_double), ("wd_ratio", c_double),
                ("momentum", c_double), ("dampening", c_double), ("nesterov", c_int)]


class Config(ctypes.Structure):
    _fields_ = [("kind", c_int), ("nonfinite", c_int), ("threads", c_int), ("dtype", c_int),
                ("max_grad_norm", c_double)]


class Diag(ctypes.Structure):
    _fields_ = [("updated", c_int), ("view", c_int), ("cos_channel", c_double), ("cos_layer", c_double),
                ("weight_norm", c_double), ("grad_norm", c_double), ("step", c_int64)]


class TensorInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("ndim", c_int), ("shape", c_int64 * MAX_NDIM), ("group", c_int),
                ("offset", c_int64), ("numel", c_int64)]


class Profile(ctypes.Structure):
    _fields_ = [("seconds", c_double * NUM_PHASES), ("exchange_bytes", c_int64), ("gradient_bytes", c_int64),
                ("allocated_bytes", c_int64), ("buffer_bytes", c_int64), ("master_bytes", c_int64)]


class User(ctypes.Structure):
    _fields_ = [("count", c_int), ("name", (ctypes.c_char * USER_NAME) * USER_MAX), ("value", c_int64 * USER_MAX)]


class SaveOptions(ctypes.Structure):
    _fields_ = [("params", c_int), ("keep_last", c_int), ("user", ctypes.POINTER(User)),
                ("arrays", ctypes.c_void_p), ("num_arrays", c_int)]


class LoadOptions(ctypes.Structure):
    _fields_ = [("params", c_int), ("keep_hparams", c_int), ("user", ctypes.POINTER(User)),
                ("arrays", ctypes.c_void_p), ("num_arrays", c_int)]


class StateIn(ctypes.Structure):
    _fields_ = [("exp_avg", c_float_p), ("exp_avg_sq", c_float_p), ("momentum", c_float_p),
                ("tensor_steps", c_int64_p), ("steps_taken", c_int64), ("steps_skipped", c_int64)]


class StepOptions(ctypes.Structure):
    _fields_ = [("has_grad", ctypes.c_char_p), ("grad_scale", c_double)]


class StepInfo(ctypes.Structure):
    _fields_ = [("applied", c_int), ("skipped", c_int), ("nonfinite_tensor", c_int), ("grad_norm", c_double),
                ("clip_coef", c_double)]


class LossScalerStruct(ctypes.Structure):
    _fields_ = [("scale", c_double), ("growth_factor", c_double), ("backoff_factor", c_double),
                ("growth_interval", c_int64), ("good_steps", c_int64)]


def _proto(name, restype, *argtypes):
    f = getattr(lib, name)
    f.restype, f.argtypes = restype, list(argtypes)
    return f


H = c_void_p  # adampi *
_proto("adampi_strerror", c_char_p, c_int)
_proto("adampi_adamp_defaults", Hparams)
_proto("adampi_sgdp_defaults", Hparams, c_double)
_proto("adampi_config_defaults", Config, c_int)
_proto("adampi_hparams_check", c_int, c_int, ctypes.POINTER(Hparams), ctypes.c_char_p, c_size_t)
_proto("adampi_create", c_int, c_void_p, ctypes.POINTER(Config), ctypes.POINTER(H), ctypes.c_char_p, c_size_t)
_proto("adampi_free", None, ctypes.POINTER(H))
_proto("adampi_last_error", c_char_p, H)
_proto("adampi_add_group", c_int, H, ctypes.POINTER(Hparams), ctypes.POINTER(c_int))
_proto("adampi_add_tensor", c_int, H, c_char_p, c_int, c_int64_p, c_int, ctypes.POINTER(c_int))
_proto("adampi_commit", c_int, H)
_proto("adampi_num_tensors", c_int, H)
_proto("adampi_numel", c_int64, H)
_proto("adampi_tensor", c_int, H, c_int, ctypes.POINTER(TensorInfo))
_proto("adampi_shard", c_int, H, c_int, c_int64_p, c_int64_p)
_proto("adampi_get_hparams", c_int, H, c_int, ctypes.POINTER(Hparams))
_proto("adampi_set_hparams", c_int, H, c_int, ctypes.POINTER(Hparams))
_proto("adampi_step", c_int, H, c_float_p, c_float_p, ctypes.c_char_p)
_proto("adampi_step_sharded", c_int, H, c_float_p, c_float_p, ctypes.c_char_p)
_proto("adampi_alloc_step_buffers", c_int, H, ctypes.POINTER(c_float_p), ctypes.POINTER(c_float_p))
_proto("adampi_diag_get", c_int, H, c_int, ctypes.POINTER(Diag))
_proto("adampi_steps_taken", c_int64, H)
_proto("adampi_steps_skipped", c_int64, H)
_proto("adampi_tensor_step", c_int64, H, c_int)
_proto("adampi_get_profile", c_int, H, ctypes.POINTER(Profile))
_proto("adampi_state_shard", c_float_p, H, c_int)
_proto("adampi_set_state", c_int, H, ctypes.POINTER(StateIn))
_proto("adampi_allgather", c_int, H, c_float_p)
_proto("adampi_dtype_size", c_size_t, c_int)
_proto("adampi_dtype_name", c_char_p, c_int)
_proto("adampi_round_to", c_int, c_int, c_float_p, c_void_p, c_int64)
_proto("adampi_widen", c_int, c_int, c_void_p, c_float_p, c_int64)
_proto("adampi_set_max_grad_norm", c_int, H, c_double)
_proto("adampi_step_defaults", StepOptions)
_proto("adampi_step_ex", c_int, H, c_void_p, c_void_p, ctypes.POINTER(StepOptions))
_proto("adampi_step_sharded_ex", c_int, H, c_void_p, c_void_p, ctypes.POINTER(StepOptions))
_proto("adampi_last_step", c_int, H, ctypes.POINTER(StepInfo))
_proto("adampi_alloc_step_buffers_ex", c_int, H, ctypes.POINTER(c_void_p), ctypes.POINTER(c_void_p))
_proto("adampi_set_master", c_int, H, c_float_p, c_int, c_void_p)
_proto("adampi_master_shard", c_float_p, H)
_proto("adampi_loss_scaler_defaults", LossScalerStruct)
_proto("adampi_loss_scaler_update", None, ctypes.POINTER(LossScalerStruct), c_int)
_proto("adampi_save_defaults", SaveOptions)
_proto("adampi_load_defaults", LoadOptions)
# params: elements of the handle's type (float32, bfloat16 or float16)
_proto("adampi_save", c_int, H, c_char_p, c_void_p, ctypes.POINTER(SaveOptions))
_proto("adampi_load", c_int, H, c_char_p, c_void_p, ctypes.POINTER(LoadOptions))

# ---- errors -------------------------------------------------------------------------------------


class AdampiError(RuntimeError):
    """A failed adampi call. `status` is the C status code; the message is the core's."""

    def __init__(self, message, status=ERR_ARG):
        super().__init__(message)
        self.status = status


class NonFiniteError(AdampiError):
    """A NaN or Inf in a gradient or a parameter: the step changed nothing, on any rank."""


class MismatchError(AdampiError):
    """The ranks disagree (models, gradients present, hyper-parameters): nothing changed."""


class CheckpointError(AdampiError):
    """A checkpoint could not be written or read (I/O, format, checksum); nothing changed."""


class HyperParameterError(AdampiError, ValueError):
    """An invalid hyper-parameter (also a ValueError, as torch.optim raises)."""


class ArgumentError(AdampiError, ValueError):
    """An invalid argument (also a ValueError)."""


class OutOfMemoryError(AdampiError, MemoryError):
    """An allocation failed."""


_CLASSES = {ERR_ARG: ArgumentError, ERR_HPARAM: HyperParameterError, ERR_STATE: AdampiError,
            ERR_MISMATCH: MismatchError, ERR_NONFINITE: NonFiniteError, ERR_NOMEM: OutOfMemoryError,
            ERR_MPI: AdampiError, ERR_IO: CheckpointError, ERR_FORMAT: CheckpointError, ERR_PEER: AdampiError}


def error_class(status):
    return _CLASSES.get(status, AdampiError)


def strerror(status):
    return lib.adampi_strerror(status).decode()


def last_error(handle):
    return lib.adampi_last_error(handle).decode(errors="replace")


def check_hparams(kind, hp):
    """The core's validation of one group (local): None if valid, else the message."""
    buf = ctypes.create_string_buffer(512)
    st = lib.adampi_hparams_check(kind, ctypes.byref(hp), buf, len(buf))
    return None if st == OK else buf.value.decode()
