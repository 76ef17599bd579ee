"""``lensearch upscale``: every file type round-trips shapes and headers, outputs stay in input units, and bad
input is a one-line error. Models come from hand-written search directories (no Ray): ``bicubic`` with minmax
normalization, whose output must equal plain bicubic interpolation in the input's units, and an untrained RDN."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from astropy.io import fits
from astropy.wcs import WCS
from helpers import RDN, fake_search  # the tests' search-directory builder

from lensearch.cli import main
from lensearch.data.store import open_h5
from lensearch.export import export_search
from lensearch.upscale import Upscaler, rescale_wcs

BACKENDS = ("torchscript", "onnx")


def _export(tmp_path_factory, tiny_h5, name, model, params):
    root = tmp_path_factory.mktemp(f"upscale_{name}")
    fake_search(root, name, {"t1": (model, params, "minmax", {"val_psnr": 30.0})}, tiny_h5)
    export_search(name, root / "model", store=root, register=False, log=lambda text: None)
    return root / "model"


@pytest.fixture(scope="module")
def bicubic_export(tmp_path_factory, tiny_h5):
    return _export(tmp_path_factory, tiny_h5, "bic", "bicubic", {})


@pytest.fixture(scope="module")
def rdn_export(tmp_path_factory, tiny_h5):
    return _export(tmp_path_factory, tiny_h5, "rdn", "rdn", RDN)


def _bicubic(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x, np.float32))
    t = t.reshape(-1, 1, *t.shape[-2:])
    return F.interpolate(t, scale_factor=2, mode="bicubic", align_corners=False).numpy()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_npy_layouts_round_trip_in_input_units(bicubic_export, tmp_path, backend):
    rng = np.random.default_rng(0)
    shapes = {"a": (9, 11), "b": (1, 9, 11), "c": (3, 9, 11), "d": (2, 1, 9, 11)}
    for name, shape in shapes.items():
        np.save(tmp_path / f"{name}.npy", 1000 * rng.random(shape) + 5)  # float64, far from [0, 1]
    inputs = [str(tmp_path / f"{n}.npy") for n in shapes]
    assert main(["upscale", str(bicubic_export), *inputs, "-o", str(tmp_path / "out"), "--backend", backend,
                 "--batch-size", "2"]) == 0
    for name, shape in shapes.items():
        sr = np.load(tmp_path / "out" / f"{name}.npy")
        assert sr.shape == (*shape[:-2], 18, 22) and sr.dtype == np.float32
        want = _bicubic(np.load(tmp_path / f"{name}.npy")).reshape(sr.shape)
        np.testing.assert_allclose(sr, want, rtol=1e-5, atol=1e-3)  # bicubic in the input's units


def test_normalization_is_inverted_output_follows_input_units(rdn_export, tiny_h5, tmp_path):
    from lensearch.models import registry

    with h5py.File(tiny_h5) as f:
        lr = f["lr"][:4]
    manifest = json.loads((rdn_export / "export.json").read_text())
    net = registry.build("rdn", scale=2, **manifest["model"]["params"]).eval()
    net.load_state_dict(torch.load(rdn_export / "state_dict.pt"))
    x = torch.from_numpy(lr)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)  # minmax, per image
    with torch.no_grad():
        want = (net((x - lo) / (hi - lo)) * (hi - lo) + lo).numpy()
    assert np.abs(want - _bicubic(lr).reshape(want.shape)).max() > 1e-3 * (lr.max() - lr.min())  # not bicubic
    np.save(tmp_path / "x1.npy", lr)
    np.save(tmp_path / "x1000.npy", 1000 * lr)
    for backend in BACKENDS:
        model = Upscaler(rdn_export, backend)
        one, thousand = model(lr), model(1000 * lr)
        span = one.max() - one.min()
        # minmax is scale-free: the network sees the same input, the inversion restores the units
        assert np.abs(thousand - 1000 * one).max() <= 1e-4 * 1000 * span
        # independent reference: the folder's eager weights, normalised and inverted by hand in data units
        np.testing.assert_allclose(one, want, rtol=0, atol=1e-4 * span)


def test_hdf5_data_file_gets_sr_next_to_hr_and_any_dataset_by_name(bicubic_export, tiny_h5, tmp_path):
    out = tmp_path / "sr.h5"
    assert main(["upscale", str(bicubic_export), str(tiny_h5), "-o", str(out), "--quiet"]) == 0
    info = open_h5(out)  # still a valid data file
    with h5py.File(tiny_h5) as f, h5py.File(out) as g:
        assert g["sr"].shape == g["hr"].shape == f["hr"].shape and info.n == f["hr"].shape[0]
        np.testing.assert_allclose(g["sr"][:5], _bicubic(f["lr"][:5]), rtol=1e-5, atol=1e-5)
        assert g["sr"].attrs["source_dataset"] == "lr" and g["sr"].attrs["scale"] == 2
        np.testing.assert_array_equal(g["label"][()], f["label"][()])

    generic = tmp_path / "stack.hdf5"
    with h5py.File(generic, "w") as f:
        f.attrs["telescope"] = "X"
        f.create_dataset("group/images", data=np.random.default_rng(1).random((4, 10, 12), np.float32))
    assert main(["upscale", str(bicubic_export), str(generic), "--dataset", "group/images"]) == 0
    with h5py.File(tmp_path / "stack_sr.hdf5") as g, h5py.File(generic) as f:
        assert g["group/images"].shape == (4, 20, 24) and g.attrs["telescope"] == "X"
        np.testing.assert_allclose(g["group/images"][()], _bicubic(f["group/images"][()])[:, 0], atol=1e-5)


def _wcs_header(kind: str) -> fits.Header:
    h = fits.Header()
    h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=150.0, CRVAL2=2.0, CRPIX1=6.0, CRPIX2=4.5,
             CUNIT1="deg", CUNIT2="deg", BUNIT="e-/s/arcsec2", PIXSCALE=0.36)
    if kind == "cdelt":
        h.update(CDELT1=-1e-4, CDELT2=1e-4)
    else:
        h.update(CD1_1=-1e-4, CD1_2=2e-5, CD2_1=1e-5, CD2_2=1e-4)
    if kind == "sip":
        h.update(CTYPE1="RA---TAN-SIP", CTYPE2="DEC--TAN-SIP", A_ORDER=2, B_ORDER=2, A_2_0=1e-3, A_1_1=2e-4,
                 B_0_2=-5e-4, A_0_1=1e-3)
    return h


@pytest.mark.parametrize("kind", ["cdelt", "cd", "sip"])
def test_fits_header_kept_and_wcs_rescaled(bicubic_export, tmp_path, kind):
    header = _wcs_header(kind)
    data = np.random.default_rng(2).random((8, 12)).astype(np.float32)
    fits.PrimaryHDU(data, header).writeto(tmp_path / "img.fits")
    assert main(["upscale", str(bicubic_export), str(tmp_path / "img.fits"), "-o", str(tmp_path / "o.fits")]) == 0
    with fits.open(tmp_path / "o.fits") as hdul:
        out, h = hdul[0].data, hdul[0].header
    assert out.shape == (16, 24) and (h["NAXIS1"], h["NAXIS2"]) == (24, 16)
    np.testing.assert_allclose(out, _bicubic(data)[0, 0], rtol=1e-5, atol=1e-5)
    assert (h["CRPIX1"], h["CRPIX2"]) == ((6.0 - 0.5) * 2 + 0.5, (4.5 - 0.5) * 2 + 0.5)
    assert h["BUNIT"] == header["BUNIT"] and h["PIXSCALE"] == pytest.approx(0.18)
    assert "lensearch" in str(h["HISTORY"]) and "upscale: 2x by bicubic" in str(h["HISTORY"])
    if kind == "cdelt":
        assert (h["CDELT1"], h["CDELT2"]) == (-5e-5, 5e-5)
    # Every sky position stays on the same spot: old pixel centre (x, y) is new pixel (2x + 0.5, 2y + 0.5).
    old, new = WCS(header), WCS(h)
    xy = np.array([[0.0, 0.0], [3.0, 7.0], [11.0, 5.0], [5.5, 2.25]])
    np.testing.assert_allclose(new.all_pix2world(2 * xy + 0.5, 0), old.all_pix2world(xy, 0), rtol=0, atol=1e-9)


def test_multi_extension_fits_needs_hdu_and_keeps_the_other_hdus(bicubic_export, tmp_path, capsys):
    img = np.ones((6, 7), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(2 * img, name="ERR")]
                 ).writeto(tmp_path / "mef.fits")
    assert main(["upscale", str(bicubic_export), str(tmp_path / "mef.fits")]) == 2
    assert "2 image HDUs (1 SCI, 2 ERR); choose one with --hdu" in _error_line(capsys)
    assert main(["upscale", str(bicubic_export), str(tmp_path / "mef.fits"), "--hdu", "SCI",
                 "-o", f"{tmp_path / 'new'}/"]) == 0
    with fits.open(tmp_path / "new" / "mef.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR"]
        assert hdul["SCI"].data.shape == (12, 14) and hdul["ERR"].data.shape == (6, 7)
        np.testing.assert_allclose(hdul["SCI"].data, 1.0, atol=1e-5)


def test_fpack_fits_and_hdu_counted_from_the_end(bicubic_export, tmp_path, capsys):
    """The same FITS rules as ``data import-fits`` (lensearch.data.fits): a .fits.fz file is read from its
    compressed extension and written back compressed, losslessly; --hdu -1 is the last HDU."""
    data = np.random.default_rng(3).random((6, 7)).astype(np.float32)
    comp = fits.CompImageHDU(data, _wcs_header("cd"), compression_type="RICE_1", name="SCI")  # lossy input
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / "img.fits.fz")
    with fits.open(tmp_path / "img.fits.fz") as hdul:
        stored = hdul["SCI"].data.copy()  # what the (quantized) file holds
    assert main(["upscale", str(bicubic_export), str(tmp_path / "img.fits.fz"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().endswith("img_sr.fits.fz")
    with fits.open(tmp_path / "img_sr.fits.fz") as hdul:
        assert [type(h).__name__ for h in hdul] == ["PrimaryHDU", "CompImageHDU"]
        out, h = hdul["SCI"].data, hdul["SCI"].header
        assert out.shape == (12, 14) and h["CD1_1"] == pytest.approx(-5e-5)
        assert "upscale: 2x by bicubic" in str(h["HISTORY"])
        np.testing.assert_allclose(out, _bicubic(stored)[0, 0], rtol=1e-5, atol=1e-5)  # no second quantization

    img = np.ones((6, 7), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(2 * img, name="ERR")]
                 ).writeto(tmp_path / "mef.fits")
    assert main(["upscale", str(bicubic_export), str(tmp_path / "mef.fits"), "--hdu", "-1", "--quiet"]) == 0
    with fits.open(tmp_path / "mef_sr.fits") as hdul:
        assert hdul["ERR"].data.shape == (12, 14) and hdul["SCI"].data.shape == (6, 7)
        np.testing.assert_allclose(hdul["ERR"].data, 2.0, atol=1e-5)
    assert main(["upscale", str(bicubic_export), str(tmp_path / "mef.fits"), "--hdu", "-4", "--overwrite"]) == 2
    assert "mef.fits: --hdu -4 not found (HDUs: 0 PRIMARY, 1 SCI, 2 ERR)" in _error_line(capsys)


def _damaged_files(folder):
    """.npy and FITS files damaged the ways disks and transfers damage them: truncated, a garbled header."""
    img = np.random.default_rng(4).random((16, 16)).astype(np.float32)
    np.save(folder / "whole.npy", img)
    raw = (folder / "whole.npy").read_bytes()
    (folder / "cut.npy").write_bytes(raw[:200])
    (folder / "header.npy").write_bytes(raw[:10] + b"{'descr': '<f4', 'fortran_order': False, 'shape': (16, 1"
                                        + raw[60:])
    fits.PrimaryHDU(img).writeto(folder / "whole.fits")
    raw = (folder / "whole.fits").read_bytes()
    (folder / "cut.fits").write_bytes(raw[:2880 + 100])  # header, then a fraction of the data
    at = raw.index(b"NAXIS1")
    (folder / "card.fits").write_bytes(raw[:at + 10] + b"'abc'".ljust(20) + raw[at + 30:])
    at = raw.index(b"BITPIX")
    (folder / "bitpix.fits").write_bytes(raw[:at + 10] + b"17".rjust(20) + raw[at + 30:])
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img)]).writeto(folder / "whole.fits.fz")
    with fits.open(folder / "whole.fits.fz") as hdul:
        start = hdul.fileinfo(1)["datLoc"]  # where the compressed tiles begin
    (folder / "cut.fits.fz").write_bytes((folder / "whole.fits.fz").read_bytes()[:start + 100])


def test_bad_input_is_one_line_and_exit_2(bicubic_export, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "small.npy", np.ones((1, 5), np.float32))
    np.save(tmp_path / "ok.npy", np.ones((4, 4), np.float32))
    np.save(tmp_path / "rgb.npy", np.ones((2, 3, 8, 8), np.float32))
    nan = np.ones((3, 4, 4), np.float32)
    nan[1, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "complex.npy", np.ones((4, 4), np.complex64))
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE = nonsense")
    _damaged_files(tmp_path)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.create_dataset("cube", data=np.ones((2, 4, 4), np.float32))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "ok_sr.npy").write_bytes(b"")
    garbled, missing, corrupt = (tmp_path / n for n in ("garbled", "missing", "corrupt"))
    for d in (garbled, missing, corrupt):
        shutil.copytree(bicubic_export, d)
    (garbled / "export.json").write_text("{not json")
    (missing / "model.ts").unlink()
    with open(corrupt / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    model = str(bicubic_export)
    cases = {
        (model, "small.npy"): "small.npy: images are 1x5 px; the model needs at least 2x2",
        (model, "rgb.npy"): "has 3 channel(s); the model takes 1",
        (model, "nan.npy"): "nan.npy: image 1 has NaN/inf pixels",
        (model, "complex.npy"): "complex.npy: expected real numbers, got dtype complex64",
        (model, "junk.npy"): "junk.npy: unreadable .npy file",
        (model, "junk.fits"): "junk.fits: unreadable FITS file",
        (model, "header.npy"): "header.npy: unreadable .npy file (TokenError",
        (model, "cut.npy"): "cut.npy: unreadable .npy file",
        (model, "cut.fits"): "cut.fits: unreadable FITS file",
        (model, "card.fits"): "card.fits: unreadable FITS file (TypeError",
        (model, "bitpix.fits"): "bitpix.fits: unreadable FITS file (KeyError",
        (model, "cut.fits.fz"): "cut.fits.fz: unreadable FITS file",
        (model, "foreign.h5"): "foreign.h5: not a lensearch data file (missing datasets: hr, lr, label, params, "
                               "split/train, split/val, split/test); to upscale one of its datasets give --dataset "
                               "NAME (datasets: cube)",
        (model, "notes.txt"): "notes.txt: unknown file type",
        (model, "absent.npy"): "absent.npy: no such file",
        (model, "ok.npy"): "ok_sr.npy: exists (use --overwrite",
        (model, "ok.npy", "--hdu", "1"): "--hdu applies to FITS inputs",
        (str(garbled), "ok.npy", "-o", "x.npy"): "export.json: garbled",
        (str(missing), "ok.npy", "-o", "x.npy"): "model.ts: missing",
        (str(corrupt), "ok.npy", "-o", "x.npy", "--backend", "onnx"): "model.onnx: corrupted (SHA-256 differs",
        (str(tmp_path), "ok.npy", "-o", "x.npy"): "not an export folder (export.json is missing)",
        (model, "ok.npy", "-o", "x.fits"): "-o x.fits: a npy input is written as npy",
        (model, "ok.npy", "-o", "results"): "-o results: neither a directory nor an image file name",
        (model, "ok.npy", "-o", "x.npy", "--device", "gpu"): "--device gpu: expected cpu, cuda or cuda:N",
    }
    for args, message in cases.items():
        assert main(["upscale", *args]) == 2, args
        line = _error_line(capsys)
        assert line.startswith("lensearch upscale: error: ") and message in line, (args, line)
    assert not list(tmp_path.glob(".partial.*"))


def test_pixel_scale_other_than_the_training_data_warns_once(bicubic_export, tiny_h5, tmp_path, capsys):
    """The manifest records the training data's LR pixel scale (tiny: 0.2"/px); an input whose WCS says
    otherwise gets one warning line naming both scales, and the file is still upscaled."""
    man = json.loads((bicubic_export / "export.json").read_text())
    assert man["data"]["attrs"]["pixel_scale_lr"] == pytest.approx(0.2)
    data = np.ones((6, 7), np.float32)
    for name, arcsec in (("coarse.fits", 0.36), ("same.fits", 0.2), ("nowcs.fits", None)):
        header = fits.Header()
        if arcsec:
            header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CD1_1=-arcsec / 3600, CD2_2=arcsec / 3600)
        fits.PrimaryHDU(data, header).writeto(tmp_path / name)
    for name, warned in (("coarse.fits", True), ("same.fits", False), ("nowcs.fits", False)):
        assert main(["upscale", str(bicubic_export), str(tmp_path / name), "--quiet"]) == 0
        err = capsys.readouterr().err.strip().splitlines()
        if warned:
            assert err == [f'lensearch upscale: warning: {tmp_path / name}[0]: pixel scale 0.36"/px, but bicubic '
                           f'was trained on LR images of 0.2"/px; its output at another sampling is not validated']
        else:
            assert err == [], name
        assert (tmp_path / name.replace(".fits", "_sr.fits")).is_file()

    other = tmp_path / "other.h5"  # a lensearch data file says its pixel scale in its attributes
    shutil.copyfile(tiny_h5, other)
    with h5py.File(other, "r+") as f:
        f.attrs["pixel_scale_lr"] = 0.1
    assert main(["upscale", str(bicubic_export), str(other), "--quiet"]) == 0
    assert '0.1"/px, but bicubic was trained on LR images of 0.2"/px' in capsys.readouterr().err
    assert main(["upscale", str(bicubic_export), str(tiny_h5), "-o", str(tmp_path / "t.h5"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_rescale_wcs_alternate_axes_untouched_third_axis():
    h = fits.Header({"CDELT1": 2.0, "CRPIX1A": 1.0, "CDELT3": 5.0, "CRPIX3": 3.0, "CD2_1B": 4.0})
    rescale_wcs(h, 4)
    assert (h["CDELT1"], h["CRPIX1A"], h["CD2_1B"]) == (0.5, 2.5, 1.0)
    assert (h["CDELT3"], h["CRPIX3"]) == (5.0, 3.0)


def test_manifest_describes_the_model(bicubic_export):
    man = json.loads((bicubic_export / "export.json").read_text())
    assert man["model"]["min_side"] == 2 and man["onnx"]["opset"] == 18
    assert Upscaler(bicubic_export).scale == 2
