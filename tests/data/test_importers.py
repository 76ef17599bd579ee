import json
import re

import numpy as np
import pytest
from astropy.io import fits

from lensearch.cli import main
from lensearch.data.importers import import_deeplense, import_fits
from lensearch.data.store import SRDataset, open_h5
from lensearch.errors import UserError


def _deeplense(root, n=12, seed=0, h=6):
    rng = np.random.default_rng(seed)
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir()
    for i in range(n):
        hr = rng.random((1, 2 * h, 2 * h))  # float64 in [0,1] like the public data
        np.save(root / "HR" / f"sample{i + 1}.npy", hr)
        np.save(root / "LR" / f"sample{i + 1}.npy", hr.reshape(1, h, 2, h, 2).mean(axis=(2, 4))[0])  # (h,w) ok
    return root


def test_deeplense_import(tmp_path, capsys):
    d = _deeplense(tmp_path / "dl")
    out = tmp_path / "dl.h5"
    assert main(["data", "import-deeplense", str(d), "--out", str(out), "--val-fraction", "0.25",
                 "--test-fraction", "0.25", "--seed", "1"]) == 0
    assert "12 pairs" in capsys.readouterr().out
    info = open_h5(out)
    assert (info.n, info.hr_shape, info.lr_shape, info.scale) == (12, (12, 12), (6, 6), 2)
    assert info.splits == {"train": 6, "val": 3, "test": 3}
    assert info.attrs["source"] == "deeplense" and info.attrs["lr_mode"] == "external"
    assert info.attrs["units"] == "normalised [0,1]"
    ds = SRDataset(out, "all")
    np.testing.assert_allclose(ds[4]["hr"].numpy(), np.load(d / "HR" / "sample5.npy"), rtol=1e-6)  # sorted by id
    assert main(["data", "import-deeplense", str(d), "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err


def test_deeplense_skips_unpaired_and_misshaped(tmp_path, capsys):
    d = _deeplense(tmp_path / "dl", n=6)
    (d / "LR" / "sample3.npy").unlink()  # unpaired HR
    np.save(d / "LR" / "sample99.npy", np.zeros((6, 6)))  # unpaired LR
    np.save(d / "HR" / "sample4.npy", np.zeros((1, 10, 10)))  # mis-shaped
    np.save(d / "HR" / "sample5.npy", np.zeros((3, 12, 12)))  # mis-shaped (3 channels)
    (d / "HR" / "sample6.npy").write_bytes(b"junk")  # unreadable
    report = import_deeplense(d, tmp_path / "out.h5")
    err = capsys.readouterr().err
    assert report.n == 2 and open_h5(report.path).n == 2
    assert "skipped 2 unpaired file(s)" in err and "sample99.npy" in err and "sample3.npy" in err
    assert "skipped 2 mis-shaped file(s)" in err and "skipped 1 unreadable file(s)" in err
    assert all(line.startswith(f"lensearch: warning: {d}: skipped") for line in err.strip().splitlines())
    # HR and LR files share their names: each skipped file is named with its folder, and its shape
    misshaped = next(line for line in err.splitlines() if "mis-shaped" in line)
    assert "HR/sample4.npy (10, 10) / LR/sample4.npy (6, 6)" in misshaped and "HR/sample5.npy (3, 12, 12)" in misshaped
    assert misshaped.endswith("(the import keeps the most common pair: HR (12, 12) / LR (6, 6))")
    assert "HR/sample6.npy / LR/sample6.npy" in err


@pytest.mark.parametrize("setup, match", [
    (lambda d: np.save(d / "HR" / "sample2.npy", np.full((1, 12, 12), np.nan)), r"sample2.npy: contains 144 NaN"),
    (lambda d: [np.save(d / "LR" / f"sample{i}.npy", np.zeros((5, 5))) for i in range(1, 4)],
     r"HR size \(12, 12\) is not an integer multiple"),
    (lambda d: [p.unlink() for p in (d / "LR").iterdir()], r"no usable HR/LR pairs"),
    (lambda d: (d / "LR").rename(d / "low"), r"LR/ is missing"),
])
def test_deeplense_bad_input_cli(tmp_path, capsys, setup, match):
    d = _deeplense(tmp_path / "dl", n=3)
    setup(d)
    out = tmp_path / "o.h5"
    assert main(["data", "import-deeplense", str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lensearch data: error:")
    assert re.search(match, err[-1])
    assert not out.exists() and not (tmp_path / "o.h5.partial").exists()


def _fits(path, data, extra=0, cdelt=None):
    hdr = fits.Header()
    if cdelt:
        hdr["CDELT1"], hdr["CDELT2"] = -cdelt / 3600, cdelt / 3600
    hdus = [fits.PrimaryHDU(data.astype(">f4"), header=hdr)]
    hdus += [fits.ImageHDU(data, name=f"EXT{i}") for i in range(extra)]
    fits.HDUList(hdus).writeto(path)


def _fits_dirs(tmp_path, n=4, extra=0):
    rng = np.random.default_rng(0)
    for sub in ("hr", "lr"):
        (tmp_path / sub).mkdir()
    for i in range(n):
        hr = rng.normal(100, 20, (16, 16))  # physical units, not [0,1]
        _fits(tmp_path / "hr" / f"obj{i}.fits", hr, extra, cdelt=0.05)
        _fits(tmp_path / "lr" / f"obj{i}.fits", hr.reshape(8, 2, 8, 2).mean(axis=(1, 3)), extra, cdelt=0.1)
    return tmp_path / "hr", tmp_path / "lr"


def test_fits_import(tmp_path, capsys):
    hr, lr = _fits_dirs(tmp_path)
    (hr / "stray.fits").write_bytes((hr / "obj0.fits").read_bytes())
    out = tmp_path / "f.h5"
    assert main(["data", "import-fits", "--hr", str(hr), "--lr", str(lr / "*.fits"), "--out", str(out)]) == 0
    assert "unpaired" in capsys.readouterr().err
    info = open_h5(out)
    assert (info.n, info.scale, info.attrs["source"], info.attrs["units"]) == (4, 2, "fits", "unknown")
    assert info.attrs["pixel_scale_hr"] == pytest.approx(0.05) and info.attrs["pixel_scale_lr"] == pytest.approx(0.1)
    assert main(["data", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4


def test_fits_multi_extension(tmp_path, capsys):
    hr, lr = _fits_dirs(tmp_path, n=2, extra=1)
    out = tmp_path / "f.h5"
    assert main(["data", "import-fits", "--hr", str(hr), "--lr", str(lr), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "obj0.fits: 2 image HDUs" in err and "--hdu" in err and len(err.splitlines()) == 1
    assert main(["data", "import-fits", "--hr", str(hr), "--lr", str(lr), "--out", str(out), "--hdu", "EXT0"]) == 0
    assert open_h5(out).n == 2
    with pytest.raises(UserError, match="--hdu 5 not found"):
        import_fits(hr, lr, tmp_path / "g.h5", hdu=5)


def test_fits_import_reads_fpack_files_and_counts_hdus_from_the_end(tmp_path, capsys):
    """The same FITS rules as ``lensearch upscale`` (lensearch.data.fits): .fits.fz files are found, paired by
    stem and read from their compressed extension; --hdu -1 is the last HDU."""
    rng = np.random.default_rng(0)
    for sub in ("hr", "lr"):
        (tmp_path / sub).mkdir()
    for i in range(3):
        hr = rng.normal(100, 20, (16, 16)).astype(np.float32)
        for sub, img, cdelt in (("hr", hr, 0.05), ("lr", hr.reshape(8, 2, 8, 2).mean(axis=(1, 3)), 0.1)):
            hdr = fits.Header({"CDELT1": -cdelt / 3600, "CDELT2": cdelt / 3600})
            comp = fits.CompImageHDU(img, hdr, compression_type="GZIP_2", quantize_level=0.0, name="SCI")
            fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp_path / sub / f"obj{i}.fits.fz")
    out = tmp_path / "fz.h5"
    assert main(["data", "import-fits", "--hr", str(tmp_path / "hr"), "--lr", str(tmp_path / "lr"),
                 "--out", str(out)]) == 0
    info = open_h5(out)
    assert (info.n, info.scale) == (3, 2) and "unpaired" not in capsys.readouterr().err
    assert info.attrs["pixel_scale_hr"] == pytest.approx(0.05) and info.attrs["pixel_scale_lr"] == pytest.approx(0.1)
    np.testing.assert_allclose(SRDataset(out, "all")[0]["hr"].numpy()[0],
                               fits.getdata(tmp_path / "hr" / "obj0.fits.fz"))

    for sub, size in (("hr_mef", 16), ("lr_mef", 8)):  # PRIMARY, ONE, TWO: --hdu -1 is TWO (3x the primary)
        (tmp_path / sub).mkdir()
        for i in range(2):
            img = rng.random((size, size)).astype(np.float32)
            fits.HDUList([fits.PrimaryHDU(img), fits.ImageHDU(2 * img, name="ONE"),
                          fits.ImageHDU(3 * img, name="TWO")]).writeto(tmp_path / sub / f"m{i}.fits")
    hr, lr = tmp_path / "hr_mef", tmp_path / "lr_mef"
    assert main(["data", "import-fits", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "m.h5"),
                 "--hdu", "-1"]) == 0
    np.testing.assert_allclose(SRDataset(tmp_path / "m.h5", "all")[0]["hr"].numpy()[0],
                               3 * fits.getdata(hr / "m0.fits"), rtol=1e-6)
    assert main(["data", "import-fits", "--hr", str(hr), "--lr", str(lr), "--out", str(tmp_path / "n.h5"),
                 "--hdu", "-4"]) == 2
    assert "m0.fits: --hdu -4 not found (HDUs: 0 PRIMARY, 1 ONE, 2 TWO)" in capsys.readouterr().err


def test_import_onto_a_directory_is_refused_before_reading(tmp_path, capsys):
    from lensearch.cli import main

    assert main(["data", "import-deeplense", str(tmp_path), "--out", str(tmp_path), "--overwrite"]) == 2
    assert "is a directory" in capsys.readouterr().err
