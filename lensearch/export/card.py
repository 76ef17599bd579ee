"""The model card (markdown) of an export folder, rendered from its manifest (see :mod:`lensearch.export`)."""

from __future__ import annotations

import math
from typing import Any

import yaml

_FMT = {"psnr": "{:.3f}", "ssim": "{:.4f}", "mse": "{:.3e}"}


def _num(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return _FMT[kind].format(value)


def _si(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _quality(metrics: dict[str, Any], suffix: str) -> list[str]:
    """One table: per split, the model next to bicubic (and the noise ceiling for the noisy-HR target)."""
    ceiling = not suffix and any(m["noise_ceiling"] for m in metrics.values())
    header = ["split", "images"] + [f"{who} {k.upper()}" for k in _FMT for who in ("model", "bicubic")]
    header += [f"ceiling {k.upper()}" for k in _FMT] if ceiling else []
    rows = []
    for split, m in metrics.items():
        row = [split, str(m["n"])]
        row += [_num(m[who].get(k + suffix), k) for k in _FMT for who in ("model", "bicubic")]
        row += [_num((m["noise_ceiling"] or {}).get(k), k) for k in _FMT] if ceiling else []
        rows.append(row)
    return _table(header, rows)


def _model(m: dict[str, Any], man: dict[str, Any]) -> list[str]:
    cost, (h, w) = man["cost"], man["cost"]["lr_shape"][-2:]
    params = ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())) or "(none)"
    return _table(["", ""], [
        ["architecture", f"`{m['name']}` ({m['kind']}): {m['summary']}"],
        ["hyperparameters", params],
        ["scale", f"{m['scale']}x, {m['in_channels']} channel(s)"],
        ["parameters", f"{int(cost['params']):,}"],
        ["FLOPs", f"{_si(cost['flops'])} per {h}x{w} LR image (2 x multiply-accumulates)"],
        ["latency", f"{cost['latency_ms']:.2f} ms PyTorch eager, {cost['latency_ms_torchscript']:.2f} ms TorchScript "
                    f"(batch 1 at {h}x{w}, {cost['device'].upper()}, {cost['threads']} threads; measured at export)"],
        ["normalization", f"`{m['normalization']}` (fitted statistics included; applied and inverted inside "
                          f"the exported graphs)"],
        ["smallest input", f"{m['min_side']}x{m['min_side']} px (the models pad internally to their size multiple)"],
    ])


def _data(d: dict[str, Any]) -> list[str]:
    a = d["attrs"]
    rows = [["file", f"`{d['path']}`"],
            ["images", f"{d['n']} (HR {'x'.join(map(str, d['hr_shape']))}, LR {'x'.join(map(str, d['lr_shape']))}, "
                       f"{d['scale']}x); splits " + ", ".join(f"{k} {v}" for k, v in d["splits"].items())],
            ["origin", ", ".join(f"{k} {a[k]}" for k in ("source", "preset", "seed", "lr_mode") if a.get(k) not in
                                 (None, "", -1)) or "-"],
            ["classes", ", ".join(d["class_names"]) or "-"],
            ["noise-free HR", "yes (`hr_clean`)" if d["has_clean"] else "no"]]
    rows += [[k, str(a[k])] for k in ("units", "pixel_scale_hr", "pixel_scale_lr", "psf_fwhm_hr", "psf_fwhm_lr")
             if a.get(k) not in (None, "") and not (isinstance(a[k], float) and math.isnan(a[k]))]
    return _table(["", ""], rows)


def _provenance(s: dict[str, Any], man: dict[str, Any]) -> list[str]:
    reg = man.get("registered")
    rows = [["search", f"`{s['search']}`, objective " + ", ".join(f"{m} ({d})" for m, d in s["objectives"])],
            ["search directory", f"`{s['search_dir']}`"],
            ["trial", f"`{s['trial_id']}` (epoch {s['epoch']}; {s['selection']})"],
            ["checkpoint", f"`{s['checkpoint']}`"],
            ["MLflow", f"tracking `{s['tracking_uri']}`, parent run `{s['parent_run_id']}`, trial run `{s['run_id']}`"]]
    if reg:
        rows.append(["registered", f"`{reg['name']}` version {reg['version']} (export run `{reg['run_id']}`)"
                                   + (f"; alias `{reg['alias']}`: `mlflow.pyfunc.load_model(\"{reg['model_uri']}\")`"
                                      if reg.get("alias") else "")])
    versions = ", ".join(f"{k} {v}" for k, v in man["versions"].items())
    rows.append(["exported", f"{man['exported_at']} by lensearch {man['lensearch_version']} ({versions})"])
    return _table(["", ""], rows)


def _files(man: dict[str, Any]) -> list[str]:
    f, v = man["files"], man["verification"]
    rows = [[f"`{f['torchscript']}`", "TorchScript (traced): raw LR `(N,1,h,w)` float32 -> SR `(N,1,s*h,s*w)`, "
                                      "input units"]]
    if "onnx" in f:
        rows.append([f"`{f['onnx']}`", f"ONNX opset {man['onnx']['opset']}, dynamic N/H/W, input `lr`, output `sr`"])
    else:
        rows.append(["(no ONNX)", f"skipped: {man['onnx']['skipped']}"])
    rows += [[f"`{f['state_dict']}`", f"weights of the bare network: `registry.build('{man['model']['name']}', "
                                      f"scale={man['model']['scale']}, **hyperparameters)`"],
             [f"`{f['config']}`", "the trial's resolved run configuration"],
             [f"`{f['normalization']}`", "the normalization state (already inside both graphs)"],
             ["`export.json`", "manifest: files with SHA-256, verification, metrics, cost, provenance"]]
    checks = [[backend, f"{r['max_abs_error']:.2e}", f"{r['tolerance']:.2e}", str(r["inputs"])]
              for backend, r in v.items()]
    rtol = next(iter(v.values()))["rtol"]
    return (_table(["file", "content"], rows)
            + ["", f"Export verification against PyTorch on real validation images (a batch, an odd-sized crop and "
                   f"a smallest-size crop); tolerance = {rtol:g} x (max - min) of the PyTorch output:", ""]
            + _table(["backend", "max abs error", "tolerance", "inputs"], checks))


def render(manifest: dict[str, Any], config: dict[str, Any]) -> str:
    """The card: model, cost, quality next to bicubic, data, provenance, files and usage."""
    m, s = manifest["model"], manifest["source"]
    lines = [f"# {m['name']} {m['scale']}x super-resolution — search `{s['search']}`, trial `{s['trial_id']}`", "",
             "## Model", "", *_model(m, manifest), "",
             "## Quality", "",
             "PSNR (dB) / SSIM / MSE on images unit-scaled by the reference HR (min -> 0, max -> 1); SSIM with an "
             "11-tap Gaussian window, sigma 1.5. Bicubic = `F.interpolate(mode='bicubic', align_corners=False)` on "
             "the same images.", "", *_quality(manifest["metrics"], "")]
    if manifest["data"]["has_clean"]:
        lines += ["", "Against the noise-free HR (`hr_clean`); the ceiling above is `hr_clean` scored against the "
                      "noisy HR, what a perfect model could reach there:", "", *_quality(manifest["metrics"], "_clean")]
    lines += ["", "## Training data", "", *_data(manifest["data"]), "",
              "## Provenance", "", *_provenance(s, manifest), "",
              "## Files", "", *_files(manifest), "",
              "## Usage", "", "```bash", "lensearch upscale THIS_FOLDER image.fits -o image_sr.fits   "
              "# also .npy and .h5; --backend onnx|torchscript, --device cuda", "```", "",
              "## Run configuration", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
