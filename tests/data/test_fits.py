"""The one FITS module (``lensearch.data.fits``) both ``data import-fits`` and ``upscale`` use: file names,
the HDU choice (EXTNAME, index, negative index from the end) and the pixel scale from the WCS."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from lensearch.data.fits import fits_suffix, parse_hdu, pick_image_hdu, pixel_scale, read_image
from lensearch.errors import UserError


@pytest.mark.parametrize("name, suffix", [
    ("a.fits", ".fits"), ("a.FITS.GZ", ".fits.gz"), ("a.fits.fz", ".fits.fz"), ("a.fts.fz", ".fts.fz"),
    ("a.fit.gz", ".fit.gz"), ("a.npy", ""), ("fits", ""), ("a.fz", ""),
])
def test_suffixes_include_gzip_and_fpack(name, suffix):
    assert fits_suffix(name) == suffix


def test_parse_hdu_reads_indices_negative_indices_and_names():
    assert [parse_hdu(t) for t in (None, "0", "2", "-1", "+1", "SCI", "-X")] == [None, 0, 2, -1, 1, "SCI", "-X"]


def _mef(path: Path) -> Path:
    img = np.arange(42, dtype=np.float32).reshape(6, 7)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI"), fits.ImageHDU(2 * img, name="ERR"),
                  fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.zeros(3))], name="TAB")]
                 ).writeto(path)
    return path


def test_hdu_choice_by_name_index_and_from_the_end(tmp_path):
    path = _mef(tmp_path / "mef.fits")
    with fits.open(path) as hdul:
        assert pick_image_hdu(hdul, "SCI", path) == 1 and pick_image_hdu(hdul, 2, path) == 2
        assert pick_image_hdu(hdul, -2, path) == 2  # -1 is the table
        with pytest.raises(UserError, match=r"mef.fits: 2 image HDUs \(1 SCI, 2 ERR\); choose one with --hdu"):
            pick_image_hdu(hdul, None, path)
        with pytest.raises(UserError, match=r"--hdu -1 is not an image HDU with at least 2 axes; image HDUs: "
                                            r"1 SCI, 2 ERR"):
            pick_image_hdu(hdul, -1, path)
        for bad in (4, -5, "NOPE"):
            with pytest.raises(UserError, match=rf"--hdu {bad} not found \(HDUs: 0 PRIMARY, 1 SCI, 2 ERR, 3 TAB\)"):
                pick_image_hdu(hdul, bad, path)
    data, header = read_image(path, -2)
    assert data.dtype == np.float32 and data[0, 1] == 2.0 and header["EXTNAME"] == "ERR"


def test_fpack_file_reads_its_compressed_extension(tmp_path):
    img = np.random.default_rng(0).random((8, 9)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, compression_type="GZIP_2", quantize_level=0.0)]
                 ).writeto(tmp_path / "c.fits.fz")
    data, _ = read_image(tmp_path / "c.fits.fz")  # the empty primary is not an image candidate
    np.testing.assert_array_equal(data, img)


@pytest.mark.parametrize("cards, arcsec", [
    ({"CDELT1": -0.05 / 3600, "CDELT2": 0.05 / 3600}, 0.05),                      # no CTYPE: degrees
    ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -1e-4, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1e-4}, 0.36),
    ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CDELT1": -0.1, "CDELT2": 0.1, "CUNIT1": "arcsec",
      "CUNIT2": "arcsec"}, 0.1),
    ({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "PC1_1": 0.0, "PC1_2": -1.0, "PC2_1": 1.0, "PC2_2": 0.0,
      "CDELT1": 2e-5, "CDELT2": 2e-5}, 0.072),                                    # rotated 90 degrees
    ({"PIXSCALE": 0.2}, 0.2),
    ({"OBJECT": "x"}, math.nan),
])
def test_pixel_scale_from_the_wcs_or_a_keyword(cards, arcsec):
    value = pixel_scale(fits.Header(cards))
    assert (math.isnan(value) and math.isnan(arcsec)) or value == pytest.approx(arcsec, rel=1e-6)
