import pickle
import re

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lensearch.cli import main
from lensearch.data.store import (H5Writer, SRDataset, check_finite, iter_batches, make_splits, open_h5,
                                  train_stats, write_h5)
from lensearch.data.transforms import build_augment
from lensearch.errors import UserError


def _arrays(n=30, h=8, w=8, scale=2, seed=0):
    rng = np.random.default_rng(seed)
    hr = rng.random((n, 1, scale * h, scale * w)).astype(np.float32)
    lr = hr.reshape(n, 1, h, scale, w, scale).mean(axis=(3, 5))
    return hr, lr, rng.integers(0, 3, n), rng.random((n, 2)).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    hr, lr, label, params = _arrays()
    path = write_h5(tmp_path / "d.h5", hr=hr, lr=lr, label=label, params=params, param_names=["a", "b"],
                    class_names=["x", "y", "z"], hr_clean=hr * 0.5, attrs={"source": "test", "seed": 3})
    return path, hr, lr, label, params


def test_roundtrip_and_info(store):
    path, hr, lr, label, params = store
    info = open_h5(path)
    assert (info.n, info.hr_shape, info.lr_shape, info.scale, info.has_clean) == (30, (16, 16), (8, 8), 2, True)
    assert info.class_names == ["x", "y", "z"] and info.param_names == ["a", "b"]
    assert sum(info.splits.values()) == 30 and info.attrs["source"] == "test" and info.attrs["seed"] == 3
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["hr"][()], hr)
        np.testing.assert_array_equal(f["label"][()], label)
        assert f["hr"].chunks == (1, 1, 16, 16) and f["hr"].dtype == np.float32
        rows = np.concatenate([f[f"split/{s}"][()] for s in ("train", "val", "test")])
        assert np.array_equal(np.sort(rows), np.arange(30))
        assert f.attrs["complete"] and f.attrs["format_version"] == 1
    assert not (path.parent / "d.h5.partial").exists()
    assert check_finite(path) == {"lr": 0, "hr": 0, "hr_clean": 0}


def test_non_square_writer_blocks(tmp_path):
    hr, lr, label, params = _arrays(n=10, h=4, w=6, scale=3)
    with H5Writer(tmp_path / "r.h5", n=10, hr_size=(12, 18), lr_size=(4, 6), scale=3, param_names=["a", "b"],
                  class_names=["x", "y", "z"], with_clean=False, attrs={"preset": "p"}) as w:
        w.write(6, hr=hr[6:, 0], lr=lr[6:], label=label[6:], params=params[6:])  # (b,H,W) accepted
        w.write(0, hr=hr[:6], lr=lr[:6], label=label[:6], params=params[:6])
    ds = SRDataset(tmp_path / "r.h5", split="all")
    assert ds[7]["hr"].shape == (1, 12, 18) and torch.equal(ds[7]["lr"], torch.from_numpy(lr[7]))


def test_writer_exception_removes_partial(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with H5Writer(path, n=4, hr_size=4, lr_size=2, scale=2, param_names=[], class_names=["a"],
                      with_clean=False, attrs={}):
            assert (tmp_path / "x.h5.partial").exists()
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="never written"):  # clean exit with missing rows
        with H5Writer(path, n=4, hr_size=4, lr_size=2, scale=2, param_names=[], class_names=["a"],
                      with_clean=False, attrs={}) as w:
            w.write(0, hr=np.zeros((2, 1, 4, 4)), lr=np.zeros((2, 1, 2, 2)), label=[0, 0], params=np.zeros((2, 0)))
    assert list(tmp_path.iterdir()) == []


def test_splits_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    s = make_splits(labels, (0.8, 0.1, 0.1), seed=1)
    assert [len(s[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    for k, frac in (("val", 0.1), ("test", 0.1)):
        assert np.allclose(np.bincount(labels[s[k]]), frac * np.array([500, 300, 200]), atol=2)
    assert all(np.array_equal(s[k], make_splits(labels, seed=1)[k]) for k in s)
    assert not np.array_equal(s["val"], make_splits(labels, seed=2)["val"])
    tiny = make_splits(np.zeros(5), (0.8, 0.1, 0.1))
    assert [len(tiny[k]) for k in ("train", "val", "test")] == [3, 1, 1]
    with pytest.raises(UserError, match="split fractions"):
        make_splits(labels, (0.5, 0.1, 0.1))


def test_dataset_items_workers_and_pickle(store):
    path, hr, lr, _, _ = store
    ds = SRDataset(path, "train", with_clean=True)
    item = ds[0]
    assert set(item) == {"lr", "hr", "hr_clean", "index"} and item["lr"].dtype == torch.float32
    np.testing.assert_array_equal(item["hr"].numpy(), hr[item["index"]])
    ds[1]  # opens a handle; pickling must drop it
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None and torch.equal(clone[1]["lr"], ds[1]["lr"])
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    idx = torch.cat([b["index"] for b in loader])
    assert sorted(idx.tolist()) == sorted(ds.rows.tolist())
    mem = SRDataset(path, "train", in_memory=True)
    assert all(torch.equal(mem[i]["hr"], ds[i]["hr"]) for i in range(len(ds)))
    assert "hr_clean" not in mem[0]


def test_in_memory_splits_are_read_once_per_process_until_the_file_changes(store, tmp_path):
    """A search's reused trial process finds the training split already in RAM; a rewritten file is read anew."""
    from lensearch.data.dataset import clear_memory_cache

    path, hr, lr, label, params = store
    clear_memory_cache()
    a, b = SRDataset(path, "train", in_memory=True), SRDataset(path, "train", in_memory=True)
    assert a._memory["hr"] is b._memory["hr"]  # the same arrays: read once
    assert SRDataset(path, "val", in_memory=True)._memory["hr"] is not a._memory["hr"]  # another split
    write_h5(path, hr=hr + 1, lr=lr, label=label, params=params, param_names=["a", "b"],
             class_names=["x", "y", "z"], hr_clean=hr * 0.5, attrs={"source": "test", "seed": 3})
    c = SRDataset(path, "train", in_memory=True)
    assert c._memory["hr"] is not a._memory["hr"]
    np.testing.assert_array_equal(c[0]["hr"].numpy(), hr[c[0]["index"]] + 1)
    clear_memory_cache()


def test_dataset_augment_varies_per_draw(store):
    path = store[0]
    ds = SRDataset(path, "all", augment=build_augment({"flips": True, "rot90": True}))
    torch.manual_seed(0)
    a = [ds[0]["hr"] for _ in range(8)]
    torch.manual_seed(0)
    b = [ds[0]["hr"] for _ in range(8)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # follows torch's seed
    assert len({x.numpy().tobytes() for x in a}) > 1


def test_stats_and_batches(store):
    path, hr, lr, _, _ = store
    rows = SRDataset(path, "train").rows
    st = train_stats(path)
    assert np.isclose(st["mean"], lr[rows].mean(), rtol=1e-6) and np.isclose(st["std"], lr[rows].std(), rtol=1e-5)
    assert st["min"] == lr[rows].min() and st["p0.1"] <= st["p50"] <= st["p99.9"]
    got = np.concatenate([b["hr"] for b in iter_batches(path, "all", 7)])
    np.testing.assert_array_equal(got, hr)


def _corrupt(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)


@pytest.mark.parametrize("damage, match", [
    (lambda f: f.attrs.__setitem__("complete", False), "looks interrupted"),
    (lambda f: f.attrs.__delitem__("complete"), "looks interrupted"),
    (lambda f: f.__delitem__("lr"), "dataset 'lr' is missing"),
    (lambda f: (f.__delitem__("lr"), f.create_dataset("lr", data=np.zeros((29, 1, 8, 8), "f4"))),
     "dataset 'lr' has 29 rows but 'hr' has 30"),
    (lambda f: (f.__delitem__("lr"), f.create_dataset("lr", data=np.zeros((30, 1, 7, 8), "f4"))),
     r"dataset 'hr': expected 2 x lr size = \(14, 16\), got \(16, 16\)"),
    (lambda f: (f.__delitem__("hr"), f.create_dataset("hr", data=np.zeros((30, 16, 16), "f4"))),
     r"dataset 'hr': expected shape \(N,1,H,W\)"),
    (lambda f: (f.__delitem__("split/val"), f.create_dataset("split/val", data=np.array([3, 30]))),
     r"dataset 'split/val': row indices must lie in 0..29"),
    (lambda f: f["lr"].__setitem__(0, np.nan), r"dataset 'lr': row 0 contains NaN"),
])
def test_validation_errors(store, damage, match, capsys):
    path = store[0]
    _corrupt(path, damage)
    with pytest.raises(UserError, match=match) as err:
        open_h5(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    for argv in (["data", "info", str(path)], ["baseline", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(match, err)


def test_foreign_hdf5_is_not_called_interrupted(tmp_path, capsys):
    """A valid HDF5 file that lensearch did not write is 'not a lensearch data file', naming what it lacks;
    only a file with the datasets H5Writer creates first (but never marked complete) 'looks interrupted'."""
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("images", data=np.zeros((3, 8, 8), "f4"))
        f.create_dataset("lr", data=np.zeros((3, 1, 4, 4), "f4"))
    assert main(["data", "info", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"lensearch data: error: {foreign}: not a lensearch data file (missing datasets: hr, label, "
                   f"params, split/train, split/val, split/test)")

    partial = tmp_path / "x.h5.partial"  # what H5Writer has written before its rows are done
    with h5py.File(partial, "w") as f:
        for name, shape in (("hr", (2, 1, 8, 8)), ("lr", (2, 1, 4, 4)), ("label", (2,)), ("params", (2, 0))):
            f.create_dataset(name, shape=shape, dtype="f4")
    with pytest.raises(UserError, match=r"x.h5.partial: looks interrupted \(attribute 'complete' is missing"):
        open_h5(partial)


def test_cli_bad_files(tmp_path, capsys, store):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    cases = [(tmp_path / "missing.h5", "no such file"), (garbage, "not an HDF5 file")]
    for path, match in cases:
        assert main(["data", "info", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and str(path) in err and len(err.splitlines()) == 1
    _corrupt(store[0], lambda f: f["hr"].__setitem__(13, np.inf))
    open_h5(store[0])  # row 13 is not among the rows sampled on open; the full scan finds it
    assert main(["data", "info", str(store[0]), "--check", "--json"]) == 2
    out = capsys.readouterr()
    assert "'hr': 1 image(s)" in out.err and out.out.count("\n") == 1
