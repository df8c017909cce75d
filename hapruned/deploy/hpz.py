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
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapruned.env.encoding import observation_size
from hapruned.resources import available_memory
from hapruned.storage import replace_atomically
from hapruned.validation import check_integer

MAGIC = b"\x89HPZ\r\n\x1a\n"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16")
_PREFIX = struct.Struct("<8sIIQ")  # magic, version, header length, payload length
_CHECKSUM = struct.Struct("<I")
_INDEX_DTYPES = {"<u1", "|u1", "<u2", "<u4"}
_VALUE_DTYPES = {"<f2", "<f4"}
_PARTS = ("row_ptr", "col_idx", "values", "bias")
_PART_DTYPES = {"row_ptr": _INDEX_DTYPES, "col_idx": _INDEX_DTYPES, "values": _VALUE_DTYPES, "bias": _VALUE_DTYPES}


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

    def check(self, rows: int, cols: int) -> None:
        """ValueError unless this is a (rows, cols) CSR matrix whose arrays agree, as the sparse op needs:
        unsigned indices, float16/32 values, ``row_ptr`` (rows + 1) non-decreasing from 0 to nnz,
        ``col_idx`` (nnz) below ``cols``, ``values`` (nnz), ``bias`` (rows). The check of every loaded file."""
        if self.shape != (rows, cols):
            raise ValueError(f"its shape is {self.shape}, expected ({rows}, {cols})")
        for part, dtypes in _PART_DTYPES.items():
            array = getattr(self, part)
            if array.ndim != 1 or array.dtype.str not in dtypes:
                raise ValueError(f"{part} must be 1-D of {' or '.join(sorted(dtypes))}, got {array.dtype.str} "
                                 f"{array.shape}")
        nnz = self.col_idx.size
        if self.row_ptr.size != rows + 1 or self.bias.size != rows or self.values.size != nnz:
            raise ValueError(f"row_ptr, bias and values must have rows + 1 = {rows + 1}, rows = {rows} and nnz = "
                             f"{nnz} entries, got {self.row_ptr.size}, {self.bias.size} and {self.values.size}")
        row_ptr = self.row_ptr.astype(np.int64)
        if row_ptr[0] != 0 or row_ptr[-1] != nnz or (np.diff(row_ptr) < 0).any():
            raise ValueError(f"row_ptr must be non-decreasing from 0 to nnz = {nnz}, got {row_ptr[0]} .. {row_ptr[-1]}")
        if nnz and int(self.col_idx.max()) >= cols:
            raise ValueError(f"col_idx must lie below cols = {cols}, got up to {int(self.col_idx.max())}")


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
    replace_atomically(path, lambda f: f.write(data))
    return len(data)


def read_hpz(path) -> tuple[dict, list[ActorWeights]]:
    """(metadata, actors) of an .hpz file; HpzError if it is not one, is truncated, corrupted, inconsistent
    or of a newer format version. Every size the header declares is checked against the file's own size and
    the architecture before anything is allocated, and every matrix with :meth:`SparseMatrix.check`."""
    where = f"{str(path)!r}"
    size = os.stat(path).st_size
    if size > available_memory():
        raise HpzError(f"{where} is {size:,} bytes, more than the memory available here")
    data = Path(path).read_bytes()
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
    payload = memoryview(data)[_PREFIX.size + header_size: expected - _CHECKSUM.size]
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + header_size].decode())
        return _parse(header, payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise HpzError(f"{where} is corrupted: its header is not JSON ({type(err).__name__})") from None
    except _Inconsistent as err:
        raise HpzError(f"{where} is corrupted: {err}") from None


class _Inconsistent(ValueError):
    """What is wrong with a header whose checksum matched (a file written by something else)."""


def _integer(value, what: str, low: int = 0) -> int:
    if type(value) is not int or value < low:
        raise _Inconsistent(f"{what} must be an integer >= {low}, got {str(value)[:40]}")
    return value


def _field(mapping, key: str, kind, what: str):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Inconsistent(f"its header lacks a valid {what}")
    return value


def _parse(header, payload: memoryview) -> tuple[dict, list[ActorWeights]]:
    """The metadata and actors of a header and its payload; _Inconsistent for anything out of place."""
    metadata = _field(header, "metadata", dict, "metadata")
    arch = _field(metadata, "architecture", dict, "architecture")
    env = _field(metadata, "environment", dict, "environment")
    n_channels = _integer(_field(env, "n_channels", int, "n_channels"), "n_channels", 1)
    for key in ("snr_low", "snr_high"):
        _field(env, key, (int, float), key)
    observe_snr = env.get("observe_snr", False)
    hidden, layers, inputs, n_actions = (_integer(_field(arch, key, int, key), key, 1)
                                         for key in ("hidden_size", "num_layers", "input_size", "n_actions"))
    if type(observe_snr) is not bool or (inputs, n_actions) != (observation_size(n_channels, observe_snr),
                                                                 n_channels + 1):
        raise _Inconsistent(f"input_size {inputs} and n_actions {n_actions} do not fit n_channels {n_channels}")
    entries = _field(header, "arrays", list, "list of arrays")
    agents = _field(header, "agents", list, "list of agents")
    if len(agents) * (layers + 1) * len(_PARTS) != len(entries):  # bounds the loops below by the header's size
        raise _Inconsistent(f"it lists {len(entries)} arrays, not the {len(_PARTS)} per matrix of {len(agents)} "
                            f"agents with {layers} layers each")
    arrays, shapes = {}, {}
    for entry in entries:
        name = _field(entry, "name", str, "array name")
        dtype = _field(entry, "dtype", str, f"dtype of {name}")
        shape = _field(entry, "shape", list, f"shape of {name}")
        if dtype not in _INDEX_DTYPES | _VALUE_DTYPES or len(shape) != 1 or name in arrays:
            raise _Inconsistent(f"array {name} is not a distinct 1-D array of a supported dtype")
        count = _integer(shape[0], f"the length of {name}")
        offset = _integer(entry.get("offset"), f"the offset of {name}")
        if offset + count * np.dtype(dtype).itemsize > len(payload):
            raise _Inconsistent(f"array {name} ({count} entries at {offset}) lies past the end of the payload")
        arrays[name] = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
        if "matrix_shape" in entry:
            matrix_shape = _field(entry, "matrix_shape", list, f"matrix shape of {name}")
            shapes[name.rpartition("/")[0]] = tuple(_integer(n, f"the matrix shape of {name}") for n in matrix_shape)

    def matrix(prefix: str, rows: int, cols: int) -> SparseMatrix:
        parts = [arrays.get(f"{prefix}/{part}") for part in _PARTS]
        if prefix not in shapes or any(part is None for part in parts):
            raise _Inconsistent(f"matrix {prefix} lacks an array or its shape")
        result = SparseMatrix(shapes[prefix], *parts)
        try:
            result.check(rows, cols)
        except ValueError as err:
            raise _Inconsistent(f"matrix {prefix}: {err}") from None
        return result

    actors = []
    for agent in agents:
        agent = _integer(agent, "an agent index")
        lstm = [matrix(f"agent{agent}/lstm{k}", 4 * hidden, (inputs if k == 0 else hidden) + hidden)
                for k in range(layers)]
        actors.append(ActorWeights(agent, lstm, matrix(f"agent{agent}/head", n_actions, hidden)))
    if len({actor.agent for actor in actors}) != len(actors):
        raise _Inconsistent("it lists an agent twice")
    return metadata, actors
