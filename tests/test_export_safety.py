"""Export and deploy against hostile input: never over a run's own files, written atomically, only the
checkpoint of the run it claims to be, and .hpz files whose header lies are refused before any large
allocation, by both loaders alike."""

import builtins
import errno
import hashlib
import io
import json
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from hapruned import resources
from hapruned.algos.trainer import train
from hapruned.deploy import ExportError, HpzError, export_actors, load_actors, read_hpz
from hapruned.deploy.numpy_actor import load_numpy_actors
from test_run_dirs import cli, one_line_error
from test_trainer import tiny_config

LOADERS = [read_hpz, load_actors, load_numpy_actors]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished tiny runs: seed 0, seed 1 of the same config, and seed 0 of another config."""
    root = tmp_path_factory.mktemp("runs")
    configs = {"seed0": tiny_config(iterations=2, eval_every=2, seed=0),
               "seed1": tiny_config(iterations=2, eval_every=2, seed=1),
               "other": tiny_config(iterations=2, eval_every=2, seed=0, hidden_size=12)}
    for name, config in configs.items():
        train(config, root / name, progress=False)
    return root


@pytest.fixture(scope="module")
def hpz(runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("hpz") / "actors.hpz"
    export_actors(runs / "seed0", path)
    return path


def copy_run(source, target):
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def contents(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------------------------- --out
@pytest.mark.parametrize("format", ["hpz", "onnx"])
@pytest.mark.parametrize("target", ["checkpoint.pt", "config.json", "summary.json", ".", "new.hpz", "a link"])
def test_export_never_writes_into_its_run(runs, tmp_path, capsys, target, format):
    run = copy_run(runs / "seed0", tmp_path / "run")
    before = contents(run)
    out = run / target
    if target == "a link":  # a path outside the run that leads to one of its files
        out = tmp_path / "actors.hpz"
        out.symlink_to(run / "checkpoint.pt")
    code, _, err = cli(["export", str(run), "--out", str(out), "--format", format], capsys)
    one_line_error(code, err, "--out", "inside the run directory")
    assert contents(run) == before


@pytest.mark.parametrize("case", ["empty", "a directory", "a missing directory", "an unwritable directory"])
def test_a_bad_out_is_one_line_and_writes_nothing(runs, tmp_path, capsys, case):
    out = {"empty": "", "a directory": str(tmp_path), "a missing directory": str(tmp_path / "no" / "a.hpz"),
           "an unwritable directory": "/proc/actors.hpz"}[case]
    before = contents(tmp_path)
    code, _, err = cli(["export", str(runs / "seed0"), "--out", out], capsys)
    one_line_error(code, err, "--out")
    assert contents(tmp_path) == before
    with pytest.raises(ExportError) as refused:
        export_actors(runs / "seed0", out)
    assert refused.value.argument == "out"


class FullDisk(io.RawIOBase):
    """A file on a disk that fills after ``room`` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[:self.room])
            self.f.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def fileno(self):
        return self.f.fileno()

    def flush(self):
        if not self.f.closed:
            self.f.flush()

    def close(self):
        super().close()  # flushes first
        self.f.close()


def fill_disk_under(monkeypatch, directory, room=200):
    """Every file opened for writing in ``directory`` (by path or by descriptor) fills up after ``room``
    bytes: the writer fails midway, whichever way it opened the file."""
    real_open = io.open

    def opened(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        where = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.path.abspath(file)
        if any(c in mode for c in "wax+") and os.path.dirname(where) == str(directory):
            return FullDisk(f, room)
        return f

    monkeypatch.setattr(io, "open", opened)
    monkeypatch.setattr(builtins, "open", opened)


@pytest.mark.parametrize("previous", [True, False], ids=["over a previous file", "a new file"])
@pytest.mark.parametrize("format", ["hpz", "onnx"])
def test_export_on_a_full_disk_leaves_the_previous_file_and_no_partial_one(runs, tmp_path, capsys, monkeypatch,
                                                                           format, previous):
    out = tmp_path / f"actors.{format}"
    if previous:
        export_actors(runs / "seed1", out, format=format)
    before = contents(tmp_path)
    with monkeypatch.context() as patch:
        fill_disk_under(patch, tmp_path)
        code, _, err = cli(["export", str(runs / "seed0"), "--out", str(out), "--format", format], capsys)
    one_line_error(code, err, "--out", "No space left on device")
    assert contents(tmp_path) == before  # the previous file whole, no temporary or empty file


# ---------------------------------------------------------------------------------------------- the run's own checkpoint
@pytest.mark.parametrize("verify", [False, True], ids=["", "--verify"])
@pytest.mark.parametrize("foreign, field", [("other", "hidden_size"), ("seed1", "seed")],
                         ids=["another config's checkpoint", "seed 1's checkpoint under seed 0's run"])
def test_export_refuses_a_checkpoint_of_another_run_before_writing(runs, tmp_path, capsys, foreign, field, verify):
    run = copy_run(runs / "seed0", tmp_path / "run")
    (run / "checkpoint.pt").write_bytes((runs / foreign / "checkpoint.pt").read_bytes())
    out = tmp_path / "actors.hpz"
    code, _, err = cli(["export", str(run), "--out", str(out), *(["--verify"] if verify else [])], capsys)
    one_line_error(code, err, "RUN_DIR", str(run / "checkpoint.pt"), "another run", field)
    assert not out.exists()
    code, _, err = cli(["train", "--out", str(run), "--resume"], capsys)  # the same check as a resume's
    one_line_error(code, err, str(run / "checkpoint.pt"), "another run", field)


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"[1]", b'{"horizon": -3}', b'{"sparsity": "high"}',
                                     b'{"colour": "blue"}'])
def test_a_damaged_config_is_one_line_on_export(runs, tmp_path, capsys, content):
    run = copy_run(runs / "seed0", tmp_path / "run")
    (run / "config.json").write_bytes(content)
    code, _, err = cli(["export", str(run), "--out", str(tmp_path / "a.hpz")], capsys)
    one_line_error(code, err, "RUN_DIR", "config.json")
    assert not (tmp_path / "a.hpz").exists()


# ---------------------------------------------------------------------------------------------- crafted .hpz files
def repack(source, target, header_change=None, payload_change=None):
    """``source`` with its header (JSON) and payload changed, and lengths and checksum made to match."""
    data = source.read_bytes()
    magic, version, header_size, payload_size = struct.unpack_from("<8sIIQ", data)
    header = data[24:24 + header_size]
    payload = bytearray(data[24 + header_size:24 + header_size + payload_size])
    if header_change is not None:
        parsed = json.loads(header)
        changed = header_change(parsed)
        header = changed if isinstance(changed, bytes) else json.dumps(parsed).encode()
        header += b" " * (-(len(header) + 24) % 8)
    if payload_change is not None:
        payload_change(json.loads(header), payload)
    body = struct.pack("<8sIIQ", magic, version, len(header), len(payload)) + header + bytes(payload)
    target.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return target


def entry(header, name):
    return next(e for e in header["arrays"] if e["name"] == name)


def set_payload(name, index, value):
    """A payload change: entry ``index`` of array ``name`` set to ``value``."""
    def change(header, payload):
        e = entry(header, name)
        array = np.frombuffer(payload, dtype=e["dtype"], count=e["shape"][0], offset=e["offset"])
        array.setflags(write=True)
        array[index] = value
    return change


def set_field(path, value):
    def change(header):
        *parents, last = path
        for key in parents:
            header = header[key]
        header[last] = value
    return change


CRAFTED = {
    "a header that is not JSON": (lambda h: b"{not json", None),
    "a header that is a list": (lambda h: b"[]", None),
    "no metadata": (lambda h: h.pop("metadata") and None, None),
    "no architecture": (lambda h: h["metadata"].pop("architecture") and None, None),
    "num_layers 10**30": (set_field(["metadata", "architecture", "num_layers"], 10**30), None),
    "num_layers 2.0": (set_field(["metadata", "architecture", "num_layers"], 2.0), None),
    "hidden_size true": (set_field(["metadata", "architecture", "hidden_size"], True), None),
    "n_actions not K + 1": (set_field(["metadata", "architecture", "n_actions"], 7), None),
    "an agent without arrays": (lambda h: h["agents"].append(7), None),
    "an agent twice": (lambda h: h["agents"].__setitem__(1, 0), None),
    "a 2-D shape of 3e8 entries": (lambda h: entry(h, "agent0/head/values").__setitem__("shape", [6, 50_000_000]), None),
    "a shape of 10**30": (lambda h: entry(h, "agent0/head/values").__setitem__("shape", [10**30]), None),
    "a float shape": (lambda h: entry(h, "agent0/head/values").__setitem__("shape", [5e7]), None),
    "an offset past the end": (lambda h: entry(h, "agent0/lstm0/bias").__setitem__("offset", 10**9), None),
    "a negative offset": (lambda h: entry(h, "agent0/lstm0/bias").__setitem__("offset", -8), None),
    "an object dtype": (lambda h: entry(h, "agent0/lstm0/bias").__setitem__("dtype", "|O"), None),
    "an index dtype for values": (lambda h: entry(h, "agent0/lstm0/values").__setitem__("dtype", "<u4"), None),
    "a head of 10**7 columns": (lambda h: entry(h, "agent0/head/row_ptr").__setitem__("matrix_shape", [3, 10**7]), None),
    "a layer of 10**7 rows": (lambda h: entry(h, "agent0/lstm0/row_ptr").__setitem__("matrix_shape", [10**7, 23]), None),
    "no matrix shape": (lambda h: entry(h, "agent0/lstm1/row_ptr").pop("matrix_shape") and None, None),
    "an empty row_ptr": (lambda h: entry(h, "agent0/lstm1/row_ptr").__setitem__("shape", [0]), None),
    "a column index out of range": (None, set_payload("agent0/lstm0/col_idx", 0, 255)),
    "a decreasing row_ptr": (None, set_payload("agent0/lstm0/row_ptr", 1, 250)),
    "row_ptr not ending at nnz": (None, set_payload("agent1/head/row_ptr", -1, 0)),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_files_with_a_valid_checksum_are_refused_by_every_loader(hpz, tmp_path, capsys, case):
    path = repack(hpz, tmp_path / "crafted.hpz", *CRAFTED[case])
    for load in LOADERS:
        with pytest.raises(HpzError, match="crafted.hpz' is corrupted"):
            load(path)
    code, _, err = cli(["deploy-bench", str(path), "--steps", "5"], capsys)
    one_line_error(code, err, "FILE", "corrupted")


@pytest.mark.parametrize("case", ["a head of 10**7 columns", "a layer of 10**7 rows", "a 2-D shape of 3e8 entries"])
def test_declared_sizes_are_refused_before_allocating(hpz, tmp_path, case):
    path = repack(hpz, tmp_path / "crafted.hpz", *CRAFTED[case])
    for load in LOADERS:
        tracemalloc.start()
        try:
            with pytest.raises(HpzError):
                load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * path.stat().st_size + 2**20, f"{load.__name__} allocated {peak:,} bytes"


def test_a_file_larger_than_the_memory_is_refused_unread(hpz, monkeypatch):
    from hapruned.deploy import hpz as hpz_module

    monkeypatch.setattr(hpz_module, "available_memory", lambda: hpz.stat().st_size - 1)
    with pytest.raises(HpzError, match="more than the memory available"):
        read_hpz(hpz)


def test_deploy_bench_refuses_dense_actors_that_do_not_fit(hpz, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 20_000)  # the file itself is smaller
    code, _, err = cli(["deploy-bench", str(hpz), "--steps", "5"], capsys)
    one_line_error(code, err, "FILE", "memory", "dense")
