"""The ``.hpz`` file: pruned LSTM actors in a compact sparse layout, read and written with NumPy alone.

Layout (little-endian)::

    magic           8 bytes   MAGIC
    format version  uint32    FORMAT_VERSION (a reader refuses a newer one)
    header length   uint32    bytes of UTF-8 JSON, space-padded so the payload starts 8-byte aligned
    payload length  uint64
    header          the metadata and one entry per array: name, dtype, shape, offset in the payload
    payload         the arrays, each at an 8-byte-aligned offset
    checksum        uint32    CRC-32 of every byte before it

Each agent's actor is its LSTM layers and its head. Layer k is one matrix W = [W_ih | W_hh]
(4H, in_k + H), gate order i, f, g, o, with the bias b_ih + b_hh (4H); the head is W (K + 1, H)
with its bias. Every matrix is stored in CSR form: ``row_ptr`` (rows + 1) and ``col_idx`` (nnz) in
the narrowest unsigned integer type that holds their largest value, ``values`` (nnz) and ``bias``
in float32 or float16. The arrays of agent ``a`` (its index in the run) are named
``agent{a}/lstm{k}/{row_ptr,col_idx,values,bias}`` and ``agent{a}/head/...``.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapruned.validation import check_integer

MAGIC = b"\x89HPZ\r\n\x1a\n"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header length, payload length
_CHECKSUM = struct.Struct("<I")
_ARRAY_DTYPES = {"<u1", "|u1", "<u2", "<u4", "<f2", "<f4"}
_PARTS = ("row_ptr", "col_idx", "values", "bias")


class HpzError(ValueError):
    """The file is not a readable ``.hpz`` file: not one at all, truncated, corrupted or too new."""


@dataclass
class SparseMatrix:
    """One weight matrix in CSR form and its bias. shape: (rows, cols); row_ptr (rows + 1,), col_idx and
    values (nnz,), bias (rows,)."""

    shape: tuple[int, int]
    row_ptr: np.ndarray
    col_idx: np.ndarray
    values: np.ndarray
    bias: np.ndarray

    @classmethod
    def from_dense(cls, weight: np.ndarray, bias: np.ndarray) -> "SparseMatrix":
        """The nonzeros of ``weight`` (rows, cols) in CSR form, indices as narrow as they fit, float32."""
        weight = np.asarray(weight, dtype=np.float32)
        rows, cols = np.nonzero(weight)  # row-major order, as CSR stores them
        row_ptr = np.zeros(weight.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=weight.shape[0]), out=row_ptr[1:])
        return cls(
            shape=tuple(weight.shape),
            row_ptr=row_ptr.astype(_narrowest_uint(len(rows))),
            col_idx=cols.astype(_narrowest_uint(weight.shape[1] - 1)),
            values=weight[rows, cols],
            bias=np.asarray(bias, dtype=np.float32),
        )

    def to_dense(self) -> np.ndarray:
        """The matrix as float32 (rows, cols), zeros included."""
        dense = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.row_ptr.astype(np.int64)))
        np.add.at(dense, (rows, self.col_idx.astype(np.int64)), self.values.astype(np.float32))
        return dense

    def astype(self, dtype: str) -> "SparseMatrix":
        """The same matrix with values and bias rounded to ``dtype`` (one of DTYPES)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return SparseMatrix(self.shape, self.row_ptr, self.col_idx, self.values.astype(dtype), self.bias.astype(dtype))

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, part).nbytes for part in _PARTS)


@dataclass
class ActorWeights:
    """One agent's actor: ``agent`` (its index in the run), its LSTM layers, its head."""

    agent: int
    layers: list[SparseMatrix]
    head: SparseMatrix


class ExportedActor:
    """What every exported actor of a file has: ``agent`` (its index in the run), ``n_channels`` K,
    ``observe_snr`` (whether its input holds the SNR feature) and ``snr_range`` (snr_low, snr_high) of
    training, ``input_size`` (K + 5, or K + 6 with ``observe_snr``), ``hidden_size``, ``num_layers``,
    ``n_actions`` (K + 1) and ``batch`` (the environments it steps); subclasses hold the weights and the
    LSTM state (``_zero_state``)."""

    def __init__(self, weights: ActorWeights, metadata: dict):
        arch, env = metadata["architecture"], metadata["environment"]
        self.agent = weights.agent
        self.n_channels = env["n_channels"]
        self.observe_snr = env.get("observe_snr", False)  # files written before the option have none
        self.snr_range = (env["snr_low"], env["snr_high"])
        self.input_size, self.hidden_size = arch["input_size"], arch["hidden_size"]
        self.num_layers, self.n_actions = arch["num_layers"], arch["n_actions"]

    def reset(self, batch: int = 1) -> None:
        """Start new episodes in ``batch`` environments: zero hidden and cell states."""
        self.batch = check_integer(batch, "batch", 1)
        self._zero_state(self.batch)

    def _zero_state(self, batch: int) -> None:
        raise NotImplementedError

    def _one_environment(self, shape) -> bool:
        """Whether features of ``shape`` are one environment's, (input_size,) at batch 1, rather than
        (batch, input_size); ValueError for any other shape."""
        if tuple(shape) == (self.batch, self.input_size):
            return False
        if self.batch == 1 and tuple(shape) == (self.input_size,):
            return True
        raise ValueError(f"features must be ({self.input_size},) for batch 1 or (batch={self.batch}, "
                         f"{self.input_size}), got {tuple(shape)}")


def _narrowest_uint(largest: int):
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"an index of {largest} does not fit the .hpz format's uint32")


def write_hpz(path, metadata: dict, actors: list[ActorWeights]) -> int:
    """Write ``actors`` and ``metadata`` (JSON values) to ``path``; returns the file's size in bytes."""
    entries, chunks, offset = [], [], 0
    for actor in actors:
        matrices = {f"lstm{k}": m for k, m in enumerate(actor.layers)} | {"head": actor.head}
        for matrix_name, matrix in matrices.items():
            for part in _PARTS:
                array = np.ascontiguousarray(getattr(matrix, part))
                entries.append({"name": f"agent{actor.agent}/{matrix_name}/{part}", "dtype": array.dtype.str,
                                "shape": list(array.shape), "offset": offset})
                if part == "row_ptr":
                    entries[-1]["matrix_shape"] = list(matrix.shape)
                padding = -array.nbytes % 8
                chunks += [array.tobytes(), b"\0" * padding]
                offset += array.nbytes + padding
    header = json.dumps({"metadata": metadata, "agents": [a.agent for a in actors], "arrays": entries}).encode()
    header += b" " * (-(len(header) + _PREFIX.size) % 8)
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header), offset) + header + b"".join(chunks)
    data = body + _CHECKSUM.pack(zlib.crc32(body))
    Path(path).write_bytes(data)
    return len(data)


def read_hpz(path) -> tuple[dict, list[ActorWeights]]:
    """(metadata, actors) of an .hpz file; HpzError if it is not one, is truncated, corrupted or of a newer
    format version."""
    data = Path(path).read_bytes()
    where = f"{str(path)!r}"
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        if MAGIC.startswith(data[:8]):
            raise HpzError(f"{where} is truncated: {len(data)} bytes, shorter than the .hpz header")
        raise HpzError(f"{where} is not an .hpz file (it does not start with the .hpz signature)")
    _, version, header_size, payload_size = _PREFIX.unpack_from(data)
    if version < 1:
        raise HpzError(f"{where} is corrupted: format version {version}")
    if version > FORMAT_VERSION:
        raise HpzError(f"{where} has .hpz format version {version}, newer than this hapruned reads "
                       f"({FORMAT_VERSION}); upgrade hapruned to read it")
    expected = _PREFIX.size + header_size + payload_size + _CHECKSUM.size
    if len(data) < expected:
        raise HpzError(f"{where} is truncated: {len(data)} of its {expected} bytes")
    if len(data) > expected:
        raise HpzError(f"{where} is corrupted: {len(data) - expected} bytes past its end")
    (checksum,) = _CHECKSUM.unpack_from(data, expected - _CHECKSUM.size)
    if zlib.crc32(memoryview(data)[: expected - _CHECKSUM.size]) != checksum:
        raise HpzError(f"{where} is corrupted: its checksum does not match its contents")
    header = json.loads(data[_PREFIX.size:_PREFIX.size + header_size])
    payload = memoryview(data)[_PREFIX.size + header_size: expected - _CHECKSUM.size]
    arrays, shapes = {}, {}
    for entry in header["arrays"]:
        if entry["dtype"] not in _ARRAY_DTYPES:
            raise HpzError(f"{where}: array {entry['name']} has an unsupported dtype {entry['dtype']}")
        arrays[entry["name"]] = np.frombuffer(payload, dtype=entry["dtype"], count=int(np.prod(entry["shape"])),
                                              offset=entry["offset"]).reshape(entry["shape"])
        if "matrix_shape" in entry:
            shapes[entry["name"].rpartition("/")[0]] = tuple(entry["matrix_shape"])
    num_layers = header["metadata"]["architecture"]["num_layers"]

    def matrix(prefix: str) -> SparseMatrix:
        return SparseMatrix(shapes[prefix], *(arrays[f"{prefix}/{part}"] for part in _PARTS))

    actors = [ActorWeights(agent, [matrix(f"agent{agent}/lstm{k}") for k in range(num_layers)],
                           matrix(f"agent{agent}/head"))
              for agent in header["agents"]]
    return header["metadata"], actors
