"""``lensearch simulate``: simulate strong-lensing HR/LR pairs into an HDF5 store file."""

from __future__ import annotations

import argparse

from lensearch.cli._args import non_negative_int, positive_int

DESCRIPTION = """\
Simulate galaxy-galaxy strong lenses with lenstronomy (SIE + external shear, elliptical Sersic source,
optional lens light) with substructure classes no_sub, cdm (point-mass subhalos), vortex (a string of point
masses) and optionally non_lens, and write noisy HR, noise-free HR and LR images with labels and per-image
parameters to FILE.h5 (see docs/architecture.md). Image i depends only on (--seed, i), so a file is
bit-for-bit reproducible for any --workers. The physics and presets are documented in
docs/simulation.md.

presets: model_i (150 px, 0.05"/px, DeepLense Model I-like), model_ii (128 px; Euclid VIS-like LR),
model_iii (128 px, 0.04"/px, HST-like), tiny (64 px, for tests and demos)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("simulate", help="simulate lensing HR/LR image pairs into an HDF5 file",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output file (written as FILE.h5.partial "
                   "and renamed when complete)")
    p.add_argument("--preset", default="tiny", help="image geometry and instrument (default: tiny)")
    p.add_argument("--count", type=positive_int, default=1000, help="number of images (default: 1000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=2, help="HR/LR size ratio (default: 2)")
    p.add_argument("--lr-mode", default="instrument", choices=("instrument", "degrade"),
                   help="instrument: the same sky seen by a coarser instrument with its own PSF and noise; "
                        "degrade: the noise-free HR image blurred, block-averaged and given noise "
                        "(default: instrument)")
    p.add_argument("--classes", default=None, metavar="A,B,...",
                   help="comma-separated classes, balanced (default: no_sub,cdm,vortex)")
    p.add_argument("--non-lens", action="store_true", help="add the non_lens class (unlensed galaxies)")
    p.add_argument("--noise-free-hr", action="store_true", help="store the noise-free image as hr")
    p.add_argument("--lens-light", action="store_true", help="include the lens galaxy's light")
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from lensearch.data.simulate import simulate_to_h5

    s = simulate_to_h5(args.out, args.preset, args.count, args.seed, scale=args.scale, lr_mode=args.lr_mode,
                       classes=args.classes, include_non_lens=args.non_lens, noise_free_hr=args.noise_free_hr,
                       lens_light=args.lens_light, workers=args.workers, progress=not args.quiet)
    hr, lr = (f"{a}x{b}" for a, b in (s["hr_shape"], s["lr_shape"]))
    print(f"wrote {s['path']}: {s['count']} images, hr {hr}, lr {lr}, classes {','.join(s['class_names'])}, "
          f"{s['seconds']:.1f} s ({s['count'] / s['seconds']:.1f} images/s)")
    return 0
