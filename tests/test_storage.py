"""lensearch.storage against a real S3-compatible server (moto, started here): URIs vs paths, upload/download,
trees, the per-node fetch cache, and a training run whose folder lives in the bucket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")

from s3server import BUCKET, s3_server  # noqa: E402

from lensearch import storage  # noqa: E402


@pytest.fixture(scope="module")
def s3():
    with s3_server() as env:
        yield env


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSEARCH_CACHE", str(tmp_path / "cache"))


def test_uris_are_told_from_paths():
    assert storage.is_uri("s3://bucket/x") and storage.is_uri("gs://b")
    assert not any(storage.is_uri(x) for x in ("file:///tmp/x", "/tmp/x", "mlruns", None, Path("/x")))
    assert storage.join("s3://b/p/", "searches", "/x/") == "s3://b/p/searches/x"
    assert storage.parent("s3://b/p/searches/x") == "s3://b/p/searches" and storage.name("s3://b/p/x/") == "x"


def test_files_and_trees_go_up_and_come_back(s3, tmp_path):
    src = tmp_path / "src"
    (src / "trials" / "t1" / "checkpoints").mkdir(parents=True)
    (src / "search.yaml").write_text("name: a\n")
    (src / "trials" / "t1" / "checkpoints" / "best.pt").write_bytes(b"\0" * 1000)
    (src / ".a.lock").write_text("")
    root = f"s3://{BUCKET}/trees/a"
    assert storage.upload_tree(src, root, skip=("trials",)) == 1
    assert storage.list_names(root) == ["search.yaml"]
    assert storage.upload_tree(src, root) == 2
    assert storage.list_names(root) == ["search.yaml", "trials"]
    assert storage.read_bytes(storage.join(root, "search.yaml")) == b"name: a\n"
    assert storage.read_bytes(storage.join(root, "nothing")) is None and not storage.exists(root + "/nothing")
    dst = tmp_path / "dst"
    assert storage.download_tree(root, dst, only=("checkpoints/best.pt",)) == 0  # `only` is relative to root
    assert storage.download_tree(root, dst, skip=("trials",)) == 1 and not (dst / "trials").exists()
    assert storage.download_tree(root, dst) == 2
    assert (dst / "trials/t1/checkpoints/best.pt").read_bytes() == b"\0" * 1000
    assert storage.download_tree(root, dst, missing_only=True) == 0
    assert not storage.download(root + "/nothing", dst / "x") and not (dst / "x").exists()
    assert storage.list_names(f"s3://{BUCKET}/no/such/prefix") == []


def test_fetch_downloads_once_per_object_version(s3, tmp_path):
    uri = f"s3://{BUCKET}/data/file.h5"
    storage.write_bytes(uri, b"one")
    first = storage.fetch(uri, "data")
    assert first.read_bytes() == b"one" and first.name == "file.h5"
    first.write_bytes(b"two")           # a cached copy is used as it is (same size): no second download
    assert storage.fetch(uri, "data") == first and first.read_bytes() == b"two"
    storage.write_bytes(uri, b"three!")  # a replaced object is a new key
    again = storage.fetch(uri, "data")
    assert again != first and again.read_bytes() == b"three!"
    with pytest.raises(Exception, match="no such file"):
        storage.fetch(f"s3://{BUCKET}/data/missing.h5")


def test_a_run_stored_in_the_bucket_resumes_from_its_stored_checkpoint_elsewhere(s3, tiny_h5, tmp_path,
                                                                                  monkeypatch):
    """fit() with ``remote_dir`` and ``data_uri``: the data comes from the bucket, last.pt/best.pt/samples.png go
    to it after each epoch; a second run with an empty cache (another node) continues after the stored epoch."""
    from lensearch.training.config import resolve_run_config
    from lensearch.training.context import RunContext
    from lensearch.training.loop import fit
    from lensearch.training.runner import prepare_data

    data_uri = f"s3://{BUCKET}/data/tiny.h5"
    storage.upload(tiny_h5, data_uri)
    config = resolve_run_config({"data": {"path": data_uri}, "model": {"name": "espcn", "num_features": 8,
                                                                       "num_layers": 3},
                                 "train": {"epochs": 2, "batch_size": 8, "patch_size": 32, "steps_per_epoch": 2,
                                           "val_max_images": 4}})
    run = prepare_data(config["data"], tmp_path)
    assert run.data_uri == data_uri and Path(run.data_path).is_file()
    remote_dir = f"s3://{BUCKET}/lensearch/searches/s-1/trials/t1"
    run = run.replace(remote_dir=remote_dir, dir=str(tmp_path / "unused"), storage_env=storage.carried_env())
    reports = []
    fit({**config, "train": {**config["train"], "epochs": 1}}, run, RunContext(report_fn=reports.append))
    assert [r["epoch"] for r in reports] == [1]
    assert storage.list_names(remote_dir) == ["checkpoints", "samples.png"]
    assert storage.list_names(remote_dir + "/checkpoints") == ["best.pt", "last.pt"]
    assert not (tmp_path / "unused").exists()  # the run worked in this node's scratch folder
    monkeypatch.setenv("LENSEARCH_CACHE", str(tmp_path / "other-node"))
    reports.clear()
    fit(config, run, RunContext(report_fn=reports.append))
    assert [r["epoch"] for r in reports] == [1, 2]  # epoch 1 said again from the stored last.pt, then epoch 2
    from lensearch.training.checkpoint import load_checkpoint

    last = load_checkpoint(storage.fetch(remote_dir + "/checkpoints/last.pt"))
    assert last["epoch"] == 2


def test_export_reads_a_search_stored_in_the_bucket(s3, tiny_h5, tmp_path):
    """``export_search(NAME, store=s3://...)``: the stored search (driver files, best.pt) and its data file come
    from the bucket into the cache; the manifest names the stored search, checkpoint and data by URI."""
    import json

    from helpers import RDN, fake_search

    from lensearch.export import export_search

    data_uri = f"s3://{BUCKET}/data/tiny-export.h5"
    storage.upload(tiny_h5, data_uri)
    local = fake_search(tmp_path / "made", "ex", {"t1": ("rdn", RDN, "minmax", {"val_psnr": 30.0}),
                                                  "t2": ("bicubic", {}, "minmax", {"val_psnr": 20.0})}, data_uri)
    (local / "origin.json").write_text(json.dumps({"name": "ex", "store": "x", "tracking_uri": "unused",
                                                   "data_path": data_uri}))
    store = f"s3://{BUCKET}/exported"
    storage.upload_tree(local, f"{store}/searches/{local.name}")
    manifest = export_search("ex", tmp_path / "model", store=store, register=False, log=lambda _: None)
    uri = f"{store}/searches/{local.name}"
    assert manifest["source"]["trial_id"] == "t1" and manifest["source"]["search_dir"] == uri
    assert manifest["source"]["checkpoint"] == f"{uri}/trials/t1/checkpoints/best.pt"
    assert manifest["data"]["uri"] == data_uri and Path(manifest["data"]["path"]).is_relative_to(tmp_path / "cache")
    assert (tmp_path / "model" / "export.json").is_file()
    again = export_search(uri, tmp_path / "model2", register=False, log=lambda _: None)  # by its URI
    assert again["source"]["checkpoint"] == manifest["source"]["checkpoint"]


def test_a_remote_store_names_new_searches_and_finds_the_one_to_resume(s3, tmp_path):
    """search/remote.py without Ray: a new search gets a stamp the bucket does not hold; --resume (latest of a
    name, or the search's URI) downloads the driver's files into a fresh working copy (not the trials)."""
    from lensearch.errors import UserError
    from lensearch.search.remote import RemoteStore, store_of

    store = f"s3://{BUCKET}/resumable"
    remote = store_of(store, False)
    assert isinstance(remote, RemoteStore) and remote.uri == store
    assert store_of("mlruns", False) is None and store_of(None, "/some/dir") is None
    new, resuming = remote.resolve_search_dir("cnn", False)
    assert not resuming and new.name.startswith("cnn-") and new.is_relative_to(tmp_path / "cache")
    with pytest.raises(UserError, match="no earlier search named 'cnn'"):
        remote.resolve_search_dir("cnn", True)
    new.mkdir(parents=True)
    (new / "search.yaml").write_text("name: cnn\n")
    (new / "trials" / "t1").mkdir(parents=True)
    (new / "trials" / "t1" / "x.pt").write_bytes(b"1")
    remote.push(new)
    uri = remote.search_uri(new)
    assert storage.list_names(uri) == ["search.yaml"]  # trials are the trials' to upload, not the driver's
    again, _ = remote.resolve_search_dir("cnn", False)
    assert again.name != new.name                       # the stamp is taken (in the bucket and here)
    (new / "search.yaml").write_text("changed locally\n")
    found, resuming = remote.resolve_search_dir("cnn", True)
    assert resuming and found == new and (found / "search.yaml").read_text() == "name: cnn\n"
    assert not (found / "trials").exists()
    by_uri = store_of(None, uri)
    assert by_uri.uri == store and by_uri.resolve_search_dir("cnn", uri) == (new, True)
    with pytest.raises(UserError, match="belongs to the store"):
        store_of(f"s3://{BUCKET}/elsewhere", uri)
    with pytest.raises(UserError, match="no search directory"):
        remote.resolve_search_dir("cnn", f"{store}/searches/cnn-19990101-000000")
