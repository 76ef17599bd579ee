"""Run one question of the study (or all of them) and regenerate its folder.

    python experiments/studies/run.py QUESTION [--scale cpu|gpu] [--quick] [--work DIR]
    python experiments/studies/run.py all [--scale cpu|gpu] [--quick]
    python experiments/studies/run.py architectures --rerun FAMILY[,FAMILY]   # after a change to one model


QUESTION is one of architectures, preprocessing, optimisation, search_efficiency, downstream. The searches run as a
user runs them (``lensearch tune FILE --profile SCALE``, then ``lensearch report``, ``lensearch export`` and
``lensearch downstream`` for question 5) into a work store (``experiments/studies/_work/<scale>/``, git-ignored:
MLflow database, checkpoints, simulated data); the study folder gets ``report/`` (the lensearch report),
``results.json`` (every number the README states), ``figures/`` and ``README.md``. ``all`` also rewrites the study
section of the top-level README (``headline.py``). Every figure is stamped with the machine it was measured on.

``--quick`` is a smoke run of the machinery (a minute or two per question: a few dozen images, two trials of two
short reports); it writes into ``<question>/_quick/`` (git-ignored), never over the study's results.
``--scale gpu`` uses the ``gpu`` profiles: the full-size study for a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "benchmarks"))

import studies  # noqa: E402
from studies import QUESTIONS  # noqa: E402

QUICK = {"count": 48, "tiny_count": 96, "time_budget": 25, "num_samples": 2, "max_epochs": 2, "seeds": [0],
         "downstream_epochs": 1, "bootstrap": 100, "families": ("espcn", "srgan")}
SEEDS = {"cpu": [0, 1, 2], "gpu": [0, 1, 2, 3, 4]}
DOWNSTREAM_EPOCHS = {"cpu": 10, "gpu": 30}


def log(text: str) -> None:
    print(f"[study] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the machine
def machine_label() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    mem = None
    if Path("/proc/meminfo").is_file():
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 2 ** 20
    gpus = []
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch CUDA: no GPU to name
        pass
    return studies.hardware_label(cpuinfo, os.cpu_count(), gpus, mem)


def stamp_figures(folder: Path, label: str) -> list[Path]:
    """Add a footer naming the hardware to every PNG under ``folder`` (figures from the report, downstream and the
    study itself), so a figure copied elsewhere still says where it was measured."""
    from PIL import Image, ImageDraw

    done = []
    for path in sorted(folder.rglob("*.png")):
        img = Image.open(path).convert("RGB")
        strip = 18
        out = Image.new("RGB", (img.width, img.height + strip), "white")
        out.paste(img, (0, 0))
        ImageDraw.Draw(out).text((4, img.height + 3), f"measured on: {label}", fill=(90, 90, 90))
        out.save(path)
        done.append(path)
    return done


# ------------------------------------------------------------------------------------------ commands
def lensearch(*args: str, cwd: Path, capture_json: bool = False, allow_fail: bool = False) -> dict[str, Any] | None:
    """Run ``python -m lensearch ARGS`` as a user would; its progress goes to our stderr. With ``capture_json``
    the last stdout line is parsed as the command's --json outcome. A failure stops the study, unless
    ``allow_fail`` (then None; an interrupted command, exit 130, always stops it)."""
    cmd = [sys.executable, "-m", "lensearch", *args]
    log("$ lensearch " + " ".join(args))
    out = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE if capture_json else None, text=True)
    if out.returncode != 0:
        if allow_fail and out.returncode != 130:
            log(f"lensearch {args[0]} failed with exit status {out.returncode}; going on without it")
            return None
        raise SystemExit(f"[study] lensearch {args[0]} failed with exit status {out.returncode}")
    if capture_json:
        lines = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("{")]
        return json.loads(lines[-1])
    return None


def data_path(yaml_path: Path, scale: str, work: Path) -> Path:
    """Where ``lensearch tune`` simulates the profile's data section on first use (relative to its working dir)."""
    from lensearch.search.schema import load_search

    d = load_search(yaml_path).with_profile(scale).data
    if d.get("path"):
        return (work / d["path"]).resolve()
    nl = "_nonlens" if d.get("non_lens") else ""
    return (work / f"data/{d['preset']}_{d['count']}_seed{d['seed']}{nl}.h5").resolve()


def quick_data(work: Path, preset: str, count: int, non_lens: bool = False) -> Path:
    path = work / "data" / f"quick_{preset}_{count}{'_nonlens' if non_lens else ''}.h5"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        lensearch("simulate", "--preset", preset, "--count", str(count), "--seed", "0", "--workers", "2",
                  "--quiet", *(["--non-lens"] if non_lens else []), "--out", str(path), cwd=work)
    return path


def tune(yaml_path: Path, ctx: "Context", data: Path | None = None, allow_fail: bool = False) -> dict[str, Any] | None:
    args = ["tune", str(yaml_path), "--profile", ctx.scale, "--store", str(ctx.store), "--json"]
    if ctx.quick:
        args += ["--data", str(data), "--time-budget", str(QUICK["time_budget"]), "--num-samples",
                 str(QUICK["num_samples"]), "--max-epochs", str(QUICK["max_epochs"])]
    elif data is not None:
        args += ["--data", str(data)]
    outcome = lensearch(*args, cwd=ctx.work, capture_json=True, allow_fail=allow_fail)
    if outcome is None:
        return None
    log(f"search {outcome['name']}: {outcome['summary'].get('trials')} trials in {outcome['search_dir']}")
    return outcome


def report(outcomes: list[dict[str, Any]], ctx: "Context", data: Path) -> dict[str, Any]:
    lensearch("report", *[o["search_dir"] for o in outcomes], "--out", str(ctx.out / "report"), "--store",
              str(ctx.store), "--data", str(data), "--overwrite", cwd=ctx.work)
    return json.loads((ctx.out / "report" / "report.json").read_text())


# ------------------------------------------------------------------------------------------ scoring
def load_sr(checkpoint: Path):
    import torch

    from lensearch.data.transforms import build_normalization
    from lensearch.export import RawImageSR, load_network

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    return RawImageSR(load_network(ckpt), build_normalization(ckpt["normalization"])).eval()


def score_test(models: dict[str, Any], data: Path, split: str = "test") -> dict[str, dict[str, list[float]]]:
    """Per test image: PSNR, SSIM (Gaussian 11/1.5) and SSIM (skimage 7x7) of bicubic, the noise ceiling
    (noise-free HR vs HR, where stored) and every model; the same images in the same order for all."""
    import torch

    from lensearch.data.baseline import upsample
    from lensearch.data.store import iter_batches, open_h5
    from lensearch.metrics import evaluate
    from lensearch.report.conventions import ssim_both

    info = open_h5(data)
    keys = ("lr", "hr", "hr_clean") if info.has_clean else ("lr", "hr")
    out: dict[str, dict[str, list[float]]] = {}
    with torch.no_grad():
        for batch in iter_batches(data, split, 16, keys):
            lr = torch.from_numpy(batch["lr"]).float()
            hr = torch.from_numpy(batch["hr"]).float()
            preds = {"bicubic": upsample(lr, info.hr_shape)}
            if info.has_clean:
                preds["noise_ceiling"] = torch.from_numpy(batch["hr_clean"]).float()
            for name, model in models.items():
                preds[name] = model(lr).float()
            for name, sr in preds.items():
                m = evaluate(sr, hr)
                rec = out.setdefault(name, {"psnr": [], "ssim": [], "ssim_skimage": []})
                rec["psnr"] += [float(x) for x in m["psnr"]]
                rec["ssim"] += [float(x) for x in m["ssim"]]
                rec["ssim_skimage"] += [float(x) for x in ssim_both(sr, hr)["ssim_skimage"]]
    return out


def collect_searches(outcomes: list[dict[str, Any]], ctx: "Context"):
    from lensearch.report.collect import collect

    return collect([o["search_dir"] for o in outcomes], ctx.store, None)


# ------------------------------------------------------------------------------------------ context
class Context:
    def __init__(self, question: str, scale: str, quick: bool, work_root: Path):
        self.question, self.scale, self.quick = question, scale, quick
        self.folder = HERE / question
        self.out = self.folder / "_quick" if quick else self.folder
        self.work = (work_root / ("quick" if quick else scale)).resolve()
        self.store = self.work / question / "mlruns"
        self.label = machine_label()
        self.t0 = time.time()
        self.command = (f"python experiments/studies/run.py {question}" + (f" --scale {scale}" if scale != "cpu" else "")
                        + (" --quick" if quick else ""))

    def fresh(self, keep_store: bool = False) -> None:
        """A fresh store and output for this question (the simulated data under work/data are kept). With
        ``keep_store`` the work store stays (``--rerun``: the searches not rerun are read back from it)."""
        self.work.mkdir(parents=True, exist_ok=True)
        if not keep_store:
            shutil.rmtree(self.work / self.question, ignore_errors=True)
        self.store.mkdir(parents=True, exist_ok=True)
        for name in ("report", "figures", "downstream"):
            shutil.rmtree(self.out / name, ignore_errors=True)
        (self.out / "figures").mkdir(parents=True, exist_ok=True)

    def yaml(self, name: str) -> Path:
        return self.folder / name

    def base(self, data: Path) -> dict[str, Any]:
        from lensearch.data.store import open_h5

        info = open_h5(data)
        return {"question": self.question, "scale": self.scale, "quick": self.quick, "hardware": self.label,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": self.command,
                "data_label": f"{data.name}: preset {info.attrs.get('preset', '?')}, {info.n} images "
                              f"({', '.join(f'{k} {v}' for k, v in info.splits.items())}), HR "
                              f"{'x'.join(map(str, info.hr_shape[-2:]))} px, scale {info.scale}x"}

    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        results["wall_s"] = time.time() - self.t0
        stamp_figures(self.out / "figures", self.label)
        if (self.out / "report").is_dir():
            stamp_figures(self.out / "report", self.label)
        if (self.out / "downstream").is_dir():
            stamp_figures(self.out / "downstream", self.label)
        (self.out / "results.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
        (self.out / "README.md").write_text(studies.render_readme(self.question, results))
        log(f"wrote {self.out / 'README.md'} and results.json ({results['wall_s'] / 60:.1f} min)")
        return results


def _jsonable(v: Any) -> Any:
    try:
        import numpy as np

        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:
        pass
    return str(v)


def _fig(ctx: Context, name: str) -> Path:
    return ctx.out / "figures" / name


def _rel(ctx: Context, path: Path) -> str:
    return str(path.relative_to(ctx.out))


# ------------------------------------------------------------------------------------------ question 1
def stored_search(ctx: Context, name: str) -> dict[str, Any]:
    """The newest finished search ``name`` in the question's work store, as the outcome fields the study reads
    (``search_dir``, ``name``, ``parent_run_id``)."""
    dirs = sorted((ctx.store / "searches").glob(f"{name}-*"), key=lambda d: d.name)
    if not dirs or not (dirs[-1] / "mlflow_runs.json").is_file():
        raise SystemExit(f"[study] --rerun: no earlier search {name} in {ctx.store}; run the question without --rerun")
    runs = json.loads((dirs[-1] / "mlflow_runs.json").read_text())
    return {"search_dir": str(dirs[-1]), "name": name, "parent_run_id": runs["parent"]}


def run_architectures(ctx: Context, only: list[str] | None, rerun: list[str] | None = None) -> dict[str, Any]:
    from lensearch.report.build import best_per_model

    q = QUESTIONS["architectures"]
    files = [y for y in q.yamls if only is None or y.removesuffix(".yaml") in only]
    if ctx.quick and only is None:
        files = [f"{f}.yaml" for f in QUICK["families"]]
    data = quick_data(ctx.work, "model_i", QUICK["count"]) if ctx.quick else data_path(ctx.yaml(files[0]), ctx.scale,
                                                                                         ctx.work)
    # a family whose search fails (every trial errored) is left out and named, the others still compare
    outcomes, failed = [], []
    for f in files:
        family = f.removesuffix(".yaml")
        if rerun is not None and family not in rerun:
            o = stored_search(ctx, f"arch_{family}")
            log(f"search {o['name']}: reused from {o['search_dir']} (not in --rerun)")
        else:
            o = tune(ctx.yaml(f), ctx, data if ctx.quick else None, allow_fail=True)
        (outcomes.append(o) if o is not None else failed.append(family))
    if not outcomes:
        raise SystemExit("[study] architectures: every search failed")
    rep = report(outcomes, ctx, data)
    models, info = {}, {}
    for s in collect_searches(outcomes, ctx):
        best = best_per_model(s)
        if not best or best[0].checkpoint is None:
            log(f"{s.name}: no scored trial with a checkpoint; left out of the table")
            continue
        t = best[0]
        models[t.model] = load_sr(t.checkpoint)
        info[t.model] = {"params": int(t.cost["params"]) if "params" in t.cost else None,
                         "trials": len(s.trials), "best_trial": t.trial_id, "val_psnr": t.best.get("val_psnr"),
                         "search": s.name}
    log(f"scoring {len(models)} best checkpoints, bicubic and the noise ceiling on the test split of {data.name}")
    per_image = score_test(models, data)
    summ = studies.architecture_summary(per_image, info)
    ceiling = per_image.get("noise_ceiling", {}).get("psnr")
    ceil_mean = sum(ceiling) / len(ceiling) if ceiling else None
    from lensearch.data.store import open_h5

    pub = studies.published_comparison(summ["rows"], ceil_mean, lr_mode=open_h5(data).attrs.get("lr_mode"))
    rows = [[r["model"], r.get("trials"), r.get("params"), _f(r.get("val_psnr")), _f(r["test_psnr"]),
             studies.fmt_ci(r["gain_db"], r["gain_lo"], r["gain_hi"]) if not r.get("reference") else _f(r["gain_db"]),
             studies.fmt_ci(r["gap_closed"], r["gap_lo"], r["gap_hi"], pct=True),
             _f(r.get("test_ssim"), 4), _f(r.get("test_ssim_skimage"), 4)] for r in summ["rows"]]
    fig = _fig(ctx, "architectures_gain.png")
    _bar_figure([r for r in summ["rows"] if not r.get("reference")], "gain_db", "gain_lo", "gain_hi",
                "test PSNR gain over bicubic (dB), 95 % CI", fig,
                f"best of each family under the same budget ({ctx.scale} scale)")
    top = next((r for r in summ["rows"] if not r.get("reference")), None)
    res = ctx.base(data)
    res.update({
        "headline": (f"best architecture {top['model']}: test PSNR {top['test_psnr']:.2f} dB, "
                     f"{studies.fmt_ci(top['gain_db'], top['gain_lo'], top['gain_hi'], unit=' dB')} over bicubic, "
                     f"{studies.fmt_ci(top['gap_closed'], top['gap_lo'], top['gap_hi'], pct=True)} of the noise-"
                     f"ceiling gap closed ({len(models)} families, same budget each)") if top else "no family scored",
        "tables": [{"title": "Best of each family, same compute, scored on the test split",
                    "note": "Each family is one search of the same budget (its file's time budget); its best checkpoint "
                            "is scored on the test images. 'gain' and 'gap closed' carry 95 % bootstrap intervals "
                            "over the test images (paired with bicubic on the same images); val_psnr is the search's "
                            "own value on its validation images.",
                    "head": ["model", "trials", "params", "val_psnr", "test PSNR", "gain over bicubic (dB)",
                             "gap closed", "SSIM (Gaussian 11/1.5)", "SSIM (skimage 7x7)"], "rows": rows},
                   {"title": "Against the published DeepLense numbers", "head": pub["head"], "rows": pub["table"]}],
        "findings": summ["findings"],
        "notes": pub["notes"] + ([f"Searches that failed (no scored trial) and are missing from the table: "
                                  f"{', '.join(failed)}."] if failed else [])
                 + ([f"Rebuilt with `--rerun {','.join(rerun)}`: only those searches ran in this command (its wall "
                     f"time above); every other family's search is the earlier full run's, read back from the work "
                     f"store (search folders: {', '.join(Path(o['search_dir']).name for o in outcomes)})."]
                    if rerun else []),
        "figures": [{"path": _rel(ctx, fig), "caption": "gain over bicubic of each family's best model (test split, "
                                                         "95 % bootstrap CI)"}],
        "report": "report", "summary": summ, "published": pub,
        "searches": [{"name": o["name"], "parent_run_id": o["parent_run_id"]} for o in outcomes],
        "report_findings": [f for s in rep["searches"] for f in s.get("findings", [])],
    })
    return ctx.finish(res)


def _f(v: Any, digits: int = 2) -> str | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


# ------------------------------------------------------------------------------------------ questions 2 and 3
def run_effects(ctx: Context) -> dict[str, Any]:
    q = QUESTIONS[ctx.question]
    path = ctx.yaml(q.yamls[0])
    data = quick_data(ctx.work, "model_i", QUICK["count"]) if ctx.quick else data_path(path, ctx.scale, ctx.work)
    outcome = tune(path, ctx, data if ctx.quick else None)
    rep = report([outcome], ctx, data)
    (s,) = collect_searches([outcome], ctx)
    scored = [t for t in s.trials if t.checkpoint is not None and t.best]
    full = [t for t in scored if t.state.startswith(("completed", "hit its time limit"))]
    which = "that used their full budget" if len(full) >= 5 else "with a score (cut ones at their best epoch)"
    scored = full if len(full) >= 5 else scored  # as the report: equal budgets when there are enough of them
    models = {t.trial_id: load_sr(t.checkpoint) for t in scored}
    log(f"scoring the kept checkpoints of {len(models)} trials on the test split of {data.name}")
    per_image = score_test(models, data)
    bic = sum(per_image["bicubic"]["psnr"]) / len(per_image["bicubic"]["psnr"])
    test_points = [(t.params, sum(per_image[t.trial_id]["psnr"]) / len(per_image[t.trial_id]["psnr"]) - bic)
                   for t in scored]
    val_points = [(t.params, t.best.get("val_psnr_gain", t.best.get("val_psnr"))) for t in scored]
    skip = ("model", "refit_of")
    params = sorted({k for p, _ in test_points for k in p if not k.startswith(skip)})
    test_eff = studies.effect_tables(test_points, "test PSNR gain over bicubic (dB)", params)
    val_eff = studies.effect_tables(val_points, "val PSNR gain (dB)", params)
    states: dict[str, int] = {}
    for t in s.trials:
        k = t.state.split(":")[0]
        states[k] = states.get(k, 0) + 1
    tables = []
    for tab in test_eff["tables"]:
        if tab["kind"] == "categorical":
            tables.append({"title": f"{tab['param']}: test PSNR gain over bicubic per value",
                           "head": ["value", "trials", "mean gain (dB) [95 % CI]", "below the best (dB) [95 % CI]"],
                           "rows": [[r["value"], r["n"], studies.fmt_ci(r["mean"], r["lo"], r["hi"], digits=3),
                                     studies.fmt_ci(r["diff_from_best"], r["diff_lo"], r["diff_hi"], digits=3)
                                     if r["diff_from_best"] else "-"] for r in tab["rows"]]})
    numeric = [t for t in test_eff["tables"] if t["kind"] == "numeric"]
    if numeric:
        tables.append({"title": "Numeric parameters: rank correlation with the test gain",
                       "head": ["parameter", "trials", "Spearman rho"],
                       "rows": [[t["param"], t["n"], _f(t["spearman"])] for t in numeric]})
    imp = (rep["searches"][0].get("importance") or {}) if rep.get("searches") else {}
    fig = _fig(ctx, f"{ctx.question}_effects.png")
    _effects_figure([t for t in test_eff["tables"] if t["kind"] == "categorical"], fig, ctx.question)
    best = max(scored, key=lambda t: sum(per_image[t.trial_id]["psnr"])) if scored else None
    best_line = ""
    if best is not None:
        gain = studies.paired_diff_ci(per_image[best.trial_id]["psnr"], per_image["bicubic"]["psnr"])
        best_line = (f" Best trial ({best.trial_id}): {studies.fmt_ci(*gain, unit=' dB')} over bicubic on the "
                     f"test split")
        if "noise_ceiling" in per_image:
            gap = studies.gap_closed_ci(per_image[best.trial_id]["psnr"], per_image["bicubic"]["psnr"],
                                        per_image["noise_ceiling"]["psnr"])
            best_line += f", {studies.fmt_ci(*gap, pct=True)} of the noise-ceiling gap closed"
        best_line += "."
    res = ctx.base(data)
    res.update({
        "headline": (f"{len(scored)} trials (random search, equal budget each); "
                     + (test_eff["findings"][0] if test_eff["findings"] else "no effect could be estimated")
                     + best_line),
        "tables": tables,
        "findings": (test_eff["findings"] + [f"(validation) {f}" for f in val_eff["findings"]]
                     + ([best_line.strip()] if best_line else []) + studies.importance_findings(imp)
                     + [f"Trial end states: {', '.join(f'{n} {k}' for k, n in states.items())}; trials that errored "
                        f"have no score and are not in the effects."]),
        "notes": [f"{len(scored)} of {len(s.trials)} trials are in the effects: those {which}.",
                  "Effects are read on the test split: each trial's kept checkpoint (best.pt, chosen by its "
                  "train.monitor) scored on the held-out test images, as gain over bicubic on the same images. "
                  "Intervals are 95 % percentile bootstraps over trials; the report's fANOVA / PED-ANOVA "
                  "importances are on the validation objective.",
                  f"Bicubic on the test split: {bic:.2f} dB."],
        "figures": [{"path": _rel(ctx, fig), "caption": "mean test PSNR gain over bicubic per value, 95 % bootstrap CI "
                                                        "over trials"}],
        "report": "report", "effects_test": test_eff, "effects_val": val_eff, "importance": imp,
        "searches": [{"name": outcome["name"], "parent_run_id": outcome["parent_run_id"]}],
    })
    return ctx.finish(res)


# ------------------------------------------------------------------------------------------ question 4
def run_search_efficiency(ctx: Context, seeds: list[int] | None) -> dict[str, Any]:
    import yaml
    from bench_search import Recorder  # experiments/benchmarks/bench_search.py: every report's wall time

    from lensearch.search.schema import load_search
    from lensearch.search.tuner import SearchOptions, run_search
    from lensearch.training.cluster import connect

    q = QUESTIONS["search_efficiency"]
    seeds = seeds or (QUICK["seeds"] if ctx.quick else SEEDS[ctx.scale])
    first = ctx.yaml(q.yamls[0])
    data = quick_data(ctx.work, "tiny", QUICK["tiny_count"]) if ctx.quick else data_path(first, ctx.scale, ctx.work)
    budget = float(QUICK["time_budget"] if ctx.quick else load_search(first).with_profile(ctx.scale)
                   .budget["time_budget_s"])
    if not data.is_file():
        from lensearch.training.runner import prepare_data

        d = load_search(first).with_profile(ctx.scale).data
        prepare_data({**d, "path": str(data)}, ctx.work)
    copies = ctx.work / ctx.question / "yamls"
    copies.mkdir(parents=True, exist_ok=True)
    arms: dict[str, dict[int, list[dict]]] = {}
    outcomes = []
    handle = connect()
    try:
        for seed in seeds:
            for name in q.yamls:
                raw = yaml.safe_load(ctx.yaml(name).read_text())
                raw["searcher"]["seed"] = seed
                raw["name"] = f"{raw['name']}_s{seed}"
                copy = copies / f"{raw['name']}.yaml"
                copy.write_text(f"# {name} with searcher.seed {seed} (written by run.py)\n" + yaml.safe_dump(raw))
                rec = Recorder()
                log(f"search {raw['name']} ({budget:.0f} s)")
                outcome = run_search(load_search(copy), SearchOptions(
                    store=ctx.store, root=ctx.work, quiet=True, callbacks=[rec], profile=ctx.scale, data=data,
                    time_budget_s=budget, **({"num_samples": 50} if ctx.quick else {})))
                arms.setdefault(name.removesuffix(".yaml"), {})[seed] = rec.results
                if seed == seeds[0]:
                    outcomes.append({"name": outcome.name, "search_dir": str(outcome.search_dir),
                                     "parent_run_id": outcome.parent_run_id})
    finally:
        handle.close()
    (ctx.work / ctx.question / "records.json").write_text(json.dumps(arms))
    rep = report(outcomes, ctx, data)  # the seed-0 searches of every arm
    summ = studies.efficiency_summary(arms, budget)
    fig = _fig(ctx, "search_efficiency_curves.png")
    _efficiency_figure(arms, budget, fig)
    ref = (rep.get("searches") or [{}])[0].get("reference") or {}
    bic, ceil = ref.get("bicubic_val_psnr"), ref.get("noise_ceiling_val_psnr")

    def gap(v):  # every arm validates on the same images of the same file: one bicubic and one ceiling
        return (v - bic) / (ceil - bic) if bic is not None and ceil is not None and ceil > bic else float("nan")

    rows = [[r["arm"], r["seeds"], studies.fmt_ci(r["final_mean"], r["final_lo"], r["final_hi"], digits=3),
             studies.fmt_ci(gap(r["final_mean"]), gap(r["final_lo"]), gap(r["final_hi"]), pct=True),
             _f(r["final_sd"], 3), _f(r["half_mean"], 3), _f(r["trials_mean"], 1), _f(r["reports_mean"], 1),
             ", ".join(f"{k}: {v:.3f}" for k, v in r["per_seed"].items())] for r in summ["rows"]]
    if bic is not None:
        summ["findings"].append(f"On these validation images bicubic scores {bic:.3f} dB"
                                + (f" and the noise ceiling {ceil:.3f} dB; the gap-closed column is the share of that "
                                   f"{ceil - bic:.2f} dB gap." if ceil is not None else "."))
    res = ctx.base(data)
    res.update({
        "headline": summ["findings"][0] if summ["findings"] else "no search reported",
        "tables": [{"title": f"Best val_psnr at equal compute ({budget:.0f} s per search, seeds {seeds})",
                    "note": "Each arm is the same problem and the same time budget; only early stopping and searcher "
                            "differ. Intervals: bootstrap over seeds (few seeds: read them as indicative).",
                    "head": ["arm", "seeds", "final best (mean [95 % CI])", "gap closed", "sd over seeds",
                             "best at half budget",
                             "trials per search", "reports per search", "per seed"], "rows": rows}],
        "findings": summ["findings"],
        "notes": ["Problem and recorder from experiments/benchmarks/bench_search.py (ASHA + TPE vs random search); "
                  "here every arm gets the same wall-time budget instead of the same trial count. The report "
                  "(report/) covers the first seed's search of each arm."],
        "figures": [{"path": _rel(ctx, fig), "caption": "best val_psnr so far against search wall time; thin: each "
                                                        "seed, thick: the mean"}],
        "report": "report", "summary": summ, "budget_s": budget, "seeds": seeds,
        "searches": [{"name": o["name"], "parent_run_id": o["parent_run_id"]} for o in outcomes],
        "report_findings": [f for s in rep["searches"] for f in s.get("findings", [])],
    })
    return ctx.finish(res)


# ------------------------------------------------------------------------------------------ question 5
def run_downstream(ctx: Context) -> dict[str, Any]:
    path = ctx.yaml("sr.yaml")
    data = (quick_data(ctx.work, "model_i", QUICK["count"], non_lens=True) if ctx.quick
            else data_path(path, ctx.scale, ctx.work))
    outcome = tune(path, ctx, data if ctx.quick else None)
    report([outcome], ctx, data)
    export = ctx.work / ctx.question / "export_sr"
    lensearch("export", outcome["search_dir"], "--out", str(export), "--store", str(ctx.store), "--no-register",
              "--overwrite", cwd=ctx.work)
    out = ctx.out / "downstream"
    epochs = QUICK["downstream_epochs"] if ctx.quick else DOWNSTREAM_EPOCHS[ctx.scale]
    lensearch("downstream", str(data), "--sr", str(export), "--out", str(out), "--epochs", str(epochs),
              "--bootstrap", str(QUICK["bootstrap"] if ctx.quick else 1000), "--store", str(ctx.store), cwd=ctx.work)
    ds = json.loads((out / "downstream.json").read_text())
    summ = studies.downstream_summary(ds)
    rows = [[r["task"], r["version"], r["metric"], studies.fmt_ci(r["value"], r["lo"], r["hi"], digits=3),
             r["n_test"]] for r in summ["rows"]]
    fig = _fig(ctx, "downstream_tasks.png")
    _downstream_figure(summ["rows"], fig)
    res = ctx.base(data)
    res.update({
        "headline": summ["findings"][0] if summ["findings"] else "no task scored",
        "tables": [{"title": "Science tasks on the test split (value [95 % bootstrap CI over test images])",
                    "note": f"Networks trained for {epochs} epochs on HR training images (LR-trained: on bicubically "
                            f"upsampled LR training images); every version scored on the same test images. All "
                            f"metrics, ROC curves and confusion matrices: downstream/downstream.md.",
                    "head": ["task", "version", "metric", "value [95 % CI]", "test images"], "rows": rows}],
        "findings": summ["findings"],
        "notes": [f"SR model: the best trial of the sr.yaml search ({outcome['name']}), exported with lensearch "
                  f"export and applied as `lensearch upscale` applies it."],
        "figures": [{"path": _rel(ctx, fig), "caption": "headline metric per task and version, 95 % bootstrap CI"}],
        "report": "report", "summary": summ,
        "searches": [{"name": outcome["name"], "parent_run_id": outcome["parent_run_id"]}],
    })
    return ctx.finish(res)


# ------------------------------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_figure(rows, key, lo, hi, ylabel, path, title):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(rows) + 2), 3.6))
    xs = range(len(rows))
    vals = [r[key] for r in rows]
    err = [[max(0.0, r[key] - r[lo]) if r[lo] is not None and math.isfinite(r[lo]) else 0 for r in rows],
           [max(0.0, r[hi] - r[key]) if r[hi] is not None and math.isfinite(r[hi]) else 0 for r in rows]]
    ax.bar(xs, vals, yerr=err, capsize=3, color="#4c72b0")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(list(xs), [r["model"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _effects_figure(tables, path, title):
    plt = _plt()
    n = max(1, len(tables))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, tab in zip(axes[0], tables):
        rows = tab["rows"]
        ys = [r["mean"] for r in rows]
        err = [[r["mean"] - r["lo"] if math.isfinite(r["lo"]) else 0 for r in rows],
               [r["hi"] - r["mean"] if math.isfinite(r["hi"]) else 0 for r in rows]]
        ax.errorbar(range(len(rows)), ys, yerr=err, fmt="o", capsize=3)
        ax.set_xticks(range(len(rows)), [f"{r['value']}\n(n={r['n']})" for r in rows], fontsize=8)
        ax.set_title(tab["param"], fontsize=9)
        ax.set_ylabel("test PSNR gain (dB)")
    if not tables:
        axes[0][0].text(0.5, 0.5, "no categorical effect to show", ha="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _efficiency_figure(arms, budget, path):
    import warnings

    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    grid = np.linspace(0, budget, 200)
    for i, (arm, seeds) in enumerate(arms.items()):
        color = f"C{i}"
        curves = []
        for recs in seeds.values():
            c = studies.best_so_far(recs)
            vals = [studies.value_at(c, t) for t in grid]
            curves.append(vals)
            ax.plot(grid, vals, color=color, lw=0.7, alpha=0.5)
        with warnings.catch_warnings():  # before a seed's first report its curve is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.asarray(curves, float), axis=0) if curves else []
        ax.plot(grid, mean, color=color, lw=2, label=arm)
    ax.set_xlabel("search wall time (s)")
    ax.set_ylabel("best val_psnr so far (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _downstream_figure(rows, path):
    plt = _plt()
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(3.6 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rs = [r for r in rows if r["task"] == task]
        ys = [r["value"] if r["value"] is not None else float("nan") for r in rs]
        err = [[r["value"] - r["lo"] if r["lo"] is not None and r["value"] is not None else 0 for r in rs],
               [r["hi"] - r["value"] if r["hi"] is not None and r["value"] is not None else 0 for r in rs]]
        ax.errorbar(range(len(rs)), ys, yerr=err, fmt="o", capsize=3)
        ax.set_xticks(range(len(rs)), [r["version"] for r in rs], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task}: {rs[0]['metric']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def run_question(question: str, args) -> dict[str, Any]:
    ctx = Context(question, args.scale, args.quick, args.work)
    if args.rerun:
        ctx.command += f" --rerun {','.join(args.rerun)}"
    if args.rerun and question != "architectures":
        raise SystemExit("[study] --rerun applies to the architectures question only")
    unknown = sorted(set(args.rerun or ()) - {y.removesuffix(".yaml") for y in QUESTIONS["architectures"].yamls})
    if unknown:
        raise SystemExit(f"[study] --rerun: unknown families {', '.join(unknown)}")
    ctx.fresh(keep_store=bool(args.rerun))
    log(f"{question}: scale {args.scale}{' (quick)' if args.quick else ''} on {ctx.label}; work {ctx.work}")
    if question == "architectures":
        return run_architectures(ctx, args.only, args.rerun)
    if question in ("preprocessing", "optimisation"):
        return run_effects(ctx)
    if question == "search_efficiency":
        return run_search_efficiency(ctx, args.seeds)
    return run_downstream(ctx)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("question", choices=[*QUESTIONS, "all"])
    ap.add_argument("--scale", choices=("cpu", "gpu"), default="cpu",
                    help="which profile of the search files: cpu (2 cores, scaled down; default) or gpu (full size)")
    ap.add_argument("--quick", action="store_true", help="a smoke run of the machinery into <question>/_quick/")
    ap.add_argument("--work", type=Path, default=HERE / "_work", help="work store and data (default: %(default)s)")
    ap.add_argument("--only", type=lambda s: s.split(","), help="architectures: only these families (comma list)")
    ap.add_argument("--rerun", type=lambda s: s.split(","),
                    help="architectures: rerun only these families' searches (comma list) and read every other "
                         "family's newest search back from the work store, then rebuild the folder")
    ap.add_argument("--seeds", type=int, nargs="+", help="search_efficiency: searcher seeds (default 0 1 2 on cpu)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    questions = list(QUESTIONS) if args.question == "all" else [args.question]
    for q in questions:
        res = run_question(q, args)
        print(f"{q}: {res.get('headline')}", flush=True)
    if args.question == "all" and not args.quick:
        import headline

        headline.main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
