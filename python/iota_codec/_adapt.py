"""Turning user objects into flat byte views, and allocating decode outputs.

Inputs: numpy arrays and scalars (float32, float16, and bfloat16 through ``ml_dtypes``),
torch CPU tensors (float32, float16, bfloat16, viewed as bytes without a detour through
float32), and any C-contiguous buffer together with an explicit ``dtype`` (and optionally
``shape``).
Tensors on other devices are staged to the host by ``iota_codec.torch._device`` first.

Non-contiguous arrays and tensors, and numpy arrays in big-endian byte order, are copied once
into a contiguous little-endian array before coding; everything else is coded in place.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core
from ._core import InvalidArgumentError, LimitExceededError

# Container hints written into frames (see docs/FORMAT.md).
HINT_UNSPECIFIED = 0
HINT_NUMPY = 1
HINT_TORCH = 2
HINT_BUFFER = 3

DTYPES = ("float32", "float16", "bfloat16")
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
_ALIASES = {
    "float32": "float32",
    "f32": "float32",
    "float": "float32",
    "float16": "float16",
    "f16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def dtype_name(dtype: Any) -> str:
    """The canonical name of a dtype given as a string, numpy dtype or torch dtype."""
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
    else:
        key = str(getattr(dtype, "name", None) or dtype).lower().removeprefix("torch.")
    try:
        return _ALIASES[key]
    except KeyError:
        raise InvalidArgumentError(
            f"unsupported dtype {dtype!r}: iota-codec codes float32, float16 and bfloat16"
        ) from None


def _torch():
    """The torch module if it is already imported (a tensor implies it is)."""
    return sys.modules.get("torch")


def is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def on_accelerator(x: Any) -> bool:
    """Whether ``x`` is a torch tensor that does not live in host memory."""
    return is_tensor(x) and x.device.type != "cpu"


def require_torch(module: str) -> None:
    """Imports torch for ``module`` (``iota_codec.torch``, ``iota_codec.nn``), or raises a
    ``ModuleNotFoundError`` that says how to install it."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise ModuleNotFoundError(
            f"{module} needs PyTorch: pip install 'iota-codec[torch]'", name="torch"
        ) from None


def _ml_dtypes():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


@dataclass
class Source:
    """A tensor as the Rust core sees it: a flat uint8 view plus its dtype and shape."""

    data: Any  # a C-contiguous uint8 numpy array (a view whenever possible)
    dtype: str
    shape: tuple[int, ...]
    hint: int


def _numpy_dtype_name(arr: np.ndarray) -> str | None:
    if arr.dtype.kind == "f" and arr.dtype.itemsize in (2, 4):
        return "float32" if arr.dtype.itemsize == 4 else "float16"
    if arr.dtype.name == "bfloat16":
        return "bfloat16"
    return None


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    """A flat uint8 view of a C-contiguous array."""
    return arr.reshape(-1).view(np.uint8)


def as_source(x: Any, dtype: Any = None, shape: Any = None) -> Source:
    """Adapts ``x`` for encoding; see the module docstring for what is accepted."""
    want = dtype_name(dtype) if dtype is not None else None
    if is_tensor(x):
        return _tensor_source(x, want, shape)
    if isinstance(x, np.generic):
        x = np.asarray(x)  # a numpy scalar codes as the 0-d array it is
    if isinstance(x, np.ndarray):
        own = _numpy_dtype_name(x)
        if want is None or want == own:
            if own is None:
                raise InvalidArgumentError(
                    f"unsupported numpy dtype {x.dtype}: iota-codec codes float32, float16 and "
                    "bfloat16 (ml_dtypes.bfloat16); pass dtype= to code raw bits as one of them"
                )
            _check_shape(shape, x.shape)
            if x.dtype.byteorder == ">" or not x.flags.c_contiguous:
                x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
            return Source(_bytes_of(x), own, tuple(x.shape), HINT_NUMPY)
        # An explicit dtype that differs from the array's: code its raw bytes.
        if not x.flags.c_contiguous:
            raise InvalidArgumentError(
                "coding an array's raw bytes as another dtype needs a C-contiguous array"
            )
        return _buffer_source(_bytes_of(x), want, shape if shape is not None else None, x)
    if want is None:
        raise InvalidArgumentError(
            f"cannot encode {type(x).__name__}: pass a numpy array or torch tensor, or a "
            "C-contiguous buffer with dtype= (and shape=)"
        )
    try:
        view = memoryview(x)
    except TypeError:
        raise InvalidArgumentError(
            f"cannot encode {type(x).__name__}: it does not support the buffer protocol"
        ) from None
    if not view.c_contiguous:
        raise InvalidArgumentError("buffers must be C-contiguous")
    return _buffer_source(np.frombuffer(view.cast("B"), dtype=np.uint8), want, shape, None)


def _check_shape(shape: Any, actual: tuple[int, ...]) -> None:
    if shape is not None and tuple(int(d) for d in shape) != tuple(actual):
        raise InvalidArgumentError(
            f"shape={tuple(shape)} does not match the input's shape {tuple(actual)}"
        )


def _buffer_source(raw: np.ndarray, dtype: str, shape: Any, arr: np.ndarray | None) -> Source:
    size = ITEMSIZE[dtype]
    if shape is None:
        if arr is not None and arr.dtype.itemsize == size:
            shape = arr.shape
        else:
            if raw.nbytes % size:
                raise InvalidArgumentError(
                    f"buffer of {raw.nbytes} bytes is not a whole number of {dtype} elements"
                )
            shape = (raw.nbytes // size,)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise InvalidArgumentError(f"negative dimension in shape {shape}")
    numel = 1
    for d in shape:
        numel *= d
    if numel * size != raw.nbytes:
        raise InvalidArgumentError(
            f"buffer holds {raw.nbytes} bytes, but shape {shape} of {dtype} needs {numel * size}"
        )
    return Source(raw, dtype, shape, HINT_BUFFER)


def _tensor_source(t: Any, want: str | None, shape: Any) -> Source:
    torch = _torch()
    own = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(
        t.dtype
    )
    if own is None:
        raise InvalidArgumentError(
            f"unsupported tensor dtype {t.dtype}: iota-codec codes torch.float32, torch.float16 "
            "and torch.bfloat16"
        )
    if want is not None and want != own:
        raise InvalidArgumentError(f"dtype={want} does not match the tensor's dtype {t.dtype}")
    _check_shape(shape, tuple(t.shape))
    if t.device.type != "cpu":
        raise InvalidArgumentError(
            f"tensor is on {t.device}; encode a CPU tensor (move it with .cpu())"
        )
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return Source(_tensor_bytes(t), own, tuple(t.shape), HINT_TORCH)


def _tensor_bytes(t: Any) -> np.ndarray:
    """A flat uint8 numpy view sharing a contiguous CPU tensor's memory (bfloat16 bits stay
    as they are: nothing goes through float32)."""
    if t.numel() == 0:
        return np.empty(0, dtype=np.uint8)
    return t.reshape(-1).view(_torch().uint8).numpy()


def _empty_numpy(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        ml = _ml_dtypes()
        if ml is None:
            warnings.warn(
                "ml_dtypes is not installed: returning bfloat16 bit patterns as uint16 "
                "(pip install ml_dtypes, or decode with out=)",
                stacklevel=3,
            )
            return np.empty(shape, dtype=np.uint16)
        return np.empty(shape, dtype=ml.bfloat16)
    return np.empty(shape, dtype=dtype)


def allocate(
    dtype: str, shape: tuple[int, ...], container: str, stacklevel: int = 3
) -> tuple[Any, np.ndarray]:
    """A new output of the kind the frame names, and a flat writable uint8 view of it
    (``stacklevel``: where a warning points, counted from here)."""
    # A frame may declare a shape with no elements whose other dimensions multiply beyond
    # what numpy and torch can index, e.g. (2**63 - 1, 0): valid bytes, but no array.
    biggest = ITEMSIZE[dtype]
    for d in shape:
        biggest *= max(d, 1)
    if biggest > sys.maxsize:
        raise LimitExceededError(
            f"the frame declares shape {shape}, whose dimensions multiply beyond what an "
            "array can index"
        )
    if container == "torch":
        try:
            import torch
        except ImportError:
            warnings.warn(
                "the frame was encoded from a torch tensor but torch is not installed: "
                "returning a numpy array",
                stacklevel=stacklevel,
            )
        else:
            t = torch.empty(shape, dtype=getattr(torch, dtype))
            view = _tensor_bytes(t)
            # numpy asks for huge pages for its own arrays of 4 MiB and more; torch does not,
            # and a decode then pays a page fault per 4 KiB it writes.
            _core._advise_huge_pages(view)
            return t, view
    arr = _empty_numpy(dtype, shape)
    return arr, _bytes_of(arr)


def decode_target(head: tuple[str, Any, str], out: Any) -> tuple[Any, np.ndarray]:
    """What a frame with header ``head`` (dtype, shape, container) decodes into: ``out``
    (checked) or a new object of the kind the frame names, and a flat writable uint8 view of
    it. For the decoding methods: a warning points at their caller."""
    dtype, shape, container = head
    shape = tuple(shape)
    if out is None:
        return allocate(dtype, shape, container, stacklevel=4)
    return out, output_view(out, dtype, shape)


def output_view(out: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Checks a caller's ``out=`` and returns a flat writable uint8 view of it."""
    numel = 1
    for d in shape:
        numel *= d
    if is_tensor(out):
        torch = _torch()
        if out.dtype != getattr(torch, dtype):
            raise InvalidArgumentError(f"out has dtype {out.dtype}, the frame holds {dtype}")
        if out.device.type != "cpu":
            raise InvalidArgumentError(f"out is on {out.device}; decode into a CPU tensor")
        if not out.is_contiguous():
            raise InvalidArgumentError("out must be contiguous")
        if out.numel() != numel:
            raise InvalidArgumentError(
                f"out has {out.numel()} elements, the frame holds {numel} (shape {shape})"
            )
        return _tensor_bytes(out.detach())
    if isinstance(out, np.ndarray):
        own = _numpy_dtype_name(out)
        bits_ok = dtype == "bfloat16" and out.dtype in (np.uint16, np.int16)
        if own != dtype and not bits_ok:
            raise InvalidArgumentError(
                f"out has dtype {out.dtype}, the frame holds {dtype}"
                + (" (a uint16 array receives bfloat16 bits)" if dtype == "bfloat16" else "")
            )
        if out.dtype.byteorder == ">":
            raise InvalidArgumentError("out must be little-endian")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidArgumentError("out must be a writable C-contiguous array")
        if out.size != numel:
            raise InvalidArgumentError(
                f"out has {out.size} elements, the frame holds {numel} (shape {shape})"
            )
        return _bytes_of(out)
    raise InvalidArgumentError(
        f"out must be a numpy array or torch tensor, not {type(out).__name__}"
    )
