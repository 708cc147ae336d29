"""Built-in acceptance policies: ``any_improvement`` (the default) and ``relative_threshold``."""

from __future__ import annotations

from compiled_opt.api import (
    Decision,
    Evaluation,
    OptionError,
    Policy,
    Register,
    hookimpl,
    improvement_text,
    relative_improvement,
)


class RelativeThreshold(Policy):
    """Accept when the challenger's mean MAE is lower than the incumbent's by more than ``threshold``
    (a fraction: 0.01 is 1%). No statistics: on noisy scores it also accepts lucky draws."""

    def __init__(self, threshold: float = 0.01, confirm: bool = False):
        if threshold < 0:
            raise OptionError(f"must be >= 0, not {threshold}", "threshold")
        self.threshold = threshold
        self.confirm = confirm

    def decide(self, challenger: Evaluation, incumbent: Evaluation) -> Decision:
        gain = relative_improvement(challenger, incumbent)
        text = improvement_text(challenger, incumbent)
        stats = {"relative_improvement": gain, "threshold": self.threshold}
        if gain > self.threshold:
            return Decision(True, text, stats)
        return Decision(
            False,
            f"Insufficient improvement: {100 * gain:.2f}% (needs > {100 * self.threshold:g}%)"
            f" (MAE: {incumbent.mean:.6f} -> {challenger.mean:.6f})",
            stats,
        )


class AnyImprovement(RelativeThreshold):
    """Accept any positive improvement (threshold 0.0): the behaviour the seed note asks for."""

    def __init__(self, threshold: float = 0.0, confirm: bool = False):
        super().__init__(threshold, confirm)


@hookimpl
def compiled_opt_register_policies(register: Register) -> None:
    register("any_improvement", AnyImprovement)
    register("relative_threshold", RelativeThreshold)
