"""An exponential moving average of a model's weights that is warmed up.

A plain EMA with decay 0.999 starts from the random initial weights: after 500 steps 0.999**500 = 61 % of
the average is still those weights, so validating (and exporting) the average early ships a worse model
than the one being trained. Here the decay used at update ``n`` is ``min(decay, (1 + n) / (10 + n))``
(the ramp TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` uses): the first updates follow the
live weights closely and the average only becomes long once many steps have been taken.
"""

from __future__ import annotations

import copy

import torch


class WarmEMA:
    """EMA of ``model``'s parameters (buffers are copied), with a warm-up ramp on the decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        for avg, live in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(live.detach(), 1.0 - d)
        for avg, live in zip(self.module.buffers(), model.buffers()):
            avg.copy_(live)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict, fallback: torch.nn.Module | None = None) -> None:
        """Restore a :meth:`state_dict`. A state without one (an older checkpoint, or none) restarts the
        average from ``fallback``'s weights (the restored live model), not from the initial ones."""
        if "module" not in state:
            if fallback is not None:
                self.module.load_state_dict(fallback.state_dict())
            self.updates = 0
            return
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
