"""adampi: AdamP and SGDP (Heo et al., ICLR 2021) as a ZeRO-style sharded optimizer over MPI.

The C library libadampi does all the maths; this package binds it with ctypes. For PyTorch:

    from adampi.torch import AdamP, SGDP

Exceptions (raised on every rank, with the same message):
    AdampiError          base class, a RuntimeError; .status holds the C status code
    NonFiniteError       a NaN or Inf in a gradient or parameter: nothing changed
    MismatchError        the ranks disagree (model, gradients present, hyper-parameters)
    CheckpointError      a checkpoint could not be written or read
    HyperParameterError  an invalid hyper-parameter (also a ValueError)
    ArgumentError        an invalid argument (also a ValueError)
"""
from ._lib import (LIBRARY_PATH, AdampiError, ArgumentError, CheckpointError, HyperParameterError,
                   MismatchError, NonFiniteError, OutOfMemoryError)

__version__ = "0.2.0"
__all__ = ["AdampiError", "ArgumentError", "CheckpointError", "HyperParameterError", "MismatchError",
           "NonFiniteError", "OutOfMemoryError", "LIBRARY_PATH", "__version__"]
