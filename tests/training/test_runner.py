"""Resource sizing of lensearch.training.runner: what a trial asks Ray for, and how many trials fit."""

from __future__ import annotations

import pytest

from lensearch.errors import UserError
from lensearch.training.runner import TRIAL_CPU, Resources


def _fits(res: Resources, cluster: dict[str, float], trials: int) -> bool:
    """Independent check: ``trials`` trials' worker bundles plus their trial bundles fit the cluster."""
    need_cpu = trials * (res.workers * res.cpus_per_worker + (TRIAL_CPU if res.workers > 1 else 0.0))
    need_gpu = trials * (res.workers * res.gpus_per_worker if res.use_gpu else 0.0)
    return need_cpu <= cluster.get("CPU", 0.0) + 1e-9 and need_gpu <= cluster.get("GPU", 0.0) + 1e-9


@pytest.mark.parametrize("request_, cluster, want, concurrent", [
    # one worker, one CPU: the trial process trains; two such trials fit 2 CPUs
    (Resources(workers=1), {"CPU": 2.0}, Resources(1, False, 1.0, 0.0), 2),
    # 2 workers x 1 CPU + the trial's 0.01 never fit 2 CPUs (Ray would wait forever): shrunk to fit
    (Resources(workers=2), {"CPU": 2.0}, Resources(2, False, 0.995, 0.0), 1),
    (Resources(workers=2, cpus_per_worker=1.5), {"CPU": 8.0}, Resources(2, False, 1.5, 0.0), 2),
    # GPU auto-detected; two workers share the one GPU
    (Resources(workers=2), {"CPU": 16.0, "GPU": 1.0}, Resources(2, True, 1.0, 0.5), 1),
    (Resources(workers=1, use_gpu=False), {"CPU": 4.0, "GPU": 1.0}, Resources(1, False, 1.0, 0.0), 4),
    (Resources(workers=1, gpus_per_worker=0.25), {"CPU": 8.0, "GPU": 1.0}, Resources(1, True, 1.0, 0.25), 4),
])
def test_resolved_requests_fit_the_cluster_and_max_concurrent_is_what_fits(request_, cluster, want, concurrent):
    res = request_.resolved(cluster)
    assert res == want
    assert res.max_concurrent(cluster) == concurrent
    assert _fits(res, cluster, concurrent) and not _fits(res, cluster, concurrent + 1)
    bundle = res.trial_bundle()
    if res.workers == 1:  # the trial process is the worker
        assert bundle == {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.use_gpu else {})}
    else:                 # the trial only drives a TorchTrainer
        assert bundle == {"CPU": TRIAL_CPU}
    assert res.threads == max(1, int(res.cpus_per_worker))


@pytest.mark.parametrize("request_, cluster, match", [
    (Resources(workers=1, use_gpu=True), {"CPU": 2.0}, r"resources\.gpu: a GPU was requested but the Ray cluster "
                                                       r"has none"),
    (Resources(workers=100), {"CPU": 2.0}, r"resources\.workers: 100 workers do not fit a cluster with 2 CPUs"),
    (Resources(workers=0), {"CPU": 2.0}, r"resources\.workers: expected >= 1, got 0"),
])
def test_impossible_requests_are_one_line_user_errors(request_, cluster, match):
    with pytest.raises(UserError, match=match) as err:
        request_.resolved(cluster)
    assert "\n" not in str(err.value)
