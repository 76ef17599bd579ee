"""The README demo, measured as a new user meets it: ``lensearch tune search_spaces/smoke.yaml`` in an empty
folder (so the tiny data set is simulated first), wall time included; beside it the plain recipe
(``plain_recipe.py``) trained on the same file for the same wall time. Target: <= 3 minutes, >= 80 % of the
bicubic -> noise-ceiling gap closed on the validation split, SSIM above bicubic's.

    python experiments/benchmarks/bench_demo.py [--repeats 1] [--skip-plain]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))


def demo(workdir: Path, seed: int) -> dict:
    space = REPO / "search_spaces" / "smoke.yaml"
    if seed:  # the same file with another searcher seed
        import yaml

        doc = yaml.safe_load(space.read_text())
        doc["searcher"]["seed"] = seed
        space = workdir / "smoke.yaml"
        space.write_text(yaml.safe_dump(doc))
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "lensearch", "tune", str(space), "--json", "--quiet"],
                         cwd=workdir, capture_output=True, text=True)
    wall = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"demo failed ({out.returncode}): {out.stderr[-3000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])["summary"]
    return {"wall": wall, **summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs with searcher seeds 0, 1, ...")
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    for seed in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            s = demo(Path(tmp), seed)
            bic, ceil = s["bicubic_val_psnr"], s["noise_ceiling_val_psnr"]
            gap = (s["best_val_psnr"] - bic) / (ceil - bic)
            rows.append((f"README demo (searcher seed {seed}, {s['trials']} trials, {s['stopped_early']} stopped "
                         f"early)", s["wall"], s["best_val_psnr"], s["best_val_ssim"], gap))
            print(f"demo seed {seed}: {s['wall']:.0f} s, best val_psnr {s['best_val_psnr']:.3f}, ssim "
                  f"{s['best_val_ssim']:.4f} (bicubic {bic:.3f} / {s['bicubic_val_ssim']:.4f}, ceiling {ceil:.3f}),"
                  f" gap closed {100 * gap:.1f} %", flush=True)
            if not args.skip_plain and seed == 0:
                import torch

                from plain_recipe import match_ray_priority, train_plain

                data = next(Path(tmp, "data").glob("*.h5"))
                torch.set_num_threads(2)
                match_ray_priority()  # the search's trials ran at Ray's worker niceness
                t0 = time.time()
                p = train_plain(str(data), s["wall"], features=16)
                plain_gap = (p["val_psnr"] - bic) / (ceil - bic)
                rows.append((f"plain recipe, 16 features ({p['steps']} steps)", time.time() - t0, p["val_psnr"],
                             p["val_ssim"], plain_gap))
    print(f"\n{'run':<62}{'wall s':>8}{'val PSNR':>10}{'SSIM':>8}{'gap closed':>12}")
    for name, wall, psnr, ssim, gap in rows:
        print(f"{name:<62}{wall:>8.0f}{psnr:>10.3f}{ssim:>8.4f}{100 * gap:>11.1f}%")
    print(f"{'bicubic':<62}{'':>8}{bic:>10.3f}{s['bicubic_val_ssim']:>8.4f}{0.0:>11.1f}%")


if __name__ == "__main__":
    main()
