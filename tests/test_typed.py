"""The typed layer (lensearch/typed.py): one formatter turns every pydantic error into lensearch's one-line
message (key path, expected, got), whichever section it came from."""

from __future__ import annotations

import pytest

from lensearch.errors import UserError
from lensearch.typed import Params, Typed, boolean, integer, number, one_of, parse, string


class Budget(Typed):
    num_samples: integer(1) = 8
    time_budget_s: number(0, exclusive=True, none=True) = None
    gpu: one_of("auto", "on", "off", True, False) = "auto"
    quiet: boolean() = False
    name: string(none=True) = None


class Doc(Typed):
    budget: Budget = Budget()


class Adam(Params):
    lr: number(0, exclusive=True, text="expected a number", range_text="expected > 0") = 1e-3


@pytest.mark.parametrize("model, data, where, owner, message", [
    (Budget, {"num_samples": "ten"}, "budget", None, "budget.num_samples: expected an integer >= 1, got 'ten'"),
    (Budget, {"num_samples": True}, "budget", None, "budget.num_samples: expected an integer >= 1, got True"),
    (Budget, {"time_budget_s": 0}, "budget", None, "budget.time_budget_s: expected a number > 0 or null, got 0"),
    (Budget, {"gpu": 1}, "budget", None, "budget.gpu: expected one of auto, on, off, True, False, got 1"),
    (Budget, {"quiet": "yes"}, "budget", None, "budget.quiet: expected true or false, got 'yes'"),
    (Budget, {"name": 3}, "budget", None, "budget.name: expected a string or null, got 3"),
    (Budget, {"num_sample": 3}, "budget", None,
     "budget.num_sample: unknown key (did you mean 'num_samples'?); valid keys: num_samples, time_budget_s, gpu, "
     "quiet, name"),
    (Doc, {"budget": {"zzz": 1}}, "", None, "budget.zzz: unknown key; valid keys: num_samples,"),
    (Doc, {"budget": []}, "", None, "budget: expected a mapping, got []"),
    (Adam, {"lr": "fast"}, "optimizer", "adam", "optimizer.lr: expected a number, got 'fast'"),
    (Adam, {"lr": 0}, "optimizer", "adam", "optimizer.lr: expected > 0, got 0"),
    (Adam, {"betas": 0}, "optimizer", "adam", "optimizer.betas: unknown parameter for adam; valid: lr"),
    (Adam, 3, "optimizer", "adam", "optimizer: expected a mapping, got 3"),
])
def test_every_mistake_is_one_line_with_key_path_expected_and_got(model, data, where, owner, message):
    with pytest.raises(UserError) as err:
        parse(model, data, where, owner=owner)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value) and "pydantic" not in str(err.value)


def test_values_are_normalised_and_defaults_filled():
    got = parse(Budget, {"num_samples": 3, "time_budget_s": 60})
    assert got.num_samples == 3 and got.time_budget_s == 60.0 and isinstance(got.time_budget_s, float)
    assert got.to_dict() == {"num_samples": 3, "time_budget_s": 60.0, "gpu": "auto", "quiet": False, "name": None}
    assert parse(Budget, None) == Budget() and Budget.defaults()["num_samples"] == 8
    assert parse(Doc, {}).budget.num_samples == 8


def _message(call) -> str:
    with pytest.raises(UserError) as err:
        call()
    return str(err.value)


def test_every_configuration_module_speaks_through_the_one_formatter(tmp_path):
    """The six former validation styles now share one: ``<key path>: expected ..., got <value>``."""
    from lensearch.data.simulate import make_config
    from lensearch.data.transforms import build_augment, build_normalization
    from lensearch.models import registry
    from lensearch.search.schema import load_search
    from lensearch.training.config import resolve_run_config
    from lensearch.training.optim import SCHEDULERS, validated

    bad_search = tmp_path / "s.yaml"
    bad_search.write_text("early_stopping: {grace_period: 0}\nspace: {model: {name: rdn}}\n")
    cases = [
        (lambda: resolve_run_config({"train": {"batch_size": "big"}}), "train.batch_size: expected an integer, got 'big'"),
        (lambda: validated("scheduler", SCHEDULERS, {"name": "step", "gamma": "x"}),
         "scheduler.gamma: expected a number, got 'x'"),
        (lambda: build_normalization({"name": "asinh", "softening": 0}), "normalization.softening: expected a positive "
                                                                        "number, got 0"),
        (lambda: build_augment({"rot90": 1}), "augment.rot90: expected true or false, got 1"),
        (lambda: registry.resolve_params("rdn", {"num_blocks": 0}), "model.rdn.num_blocks: expected int in [1, "),
        (lambda: make_config("tiny", -1), "seed: expected an integer >= 0, got -1"),
        (lambda: load_search(bad_search), f"{bad_search}: early_stopping.grace_period: expected an integer >= 1, got 0"),
    ]
    for call, expected in cases:
        assert _message(call).startswith(expected), (_message(call), expected)
