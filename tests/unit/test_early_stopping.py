"""The SFT stage's early stopper: patience counts evaluations without a gain, min_steps holds it off."""

from orchestrator.stages.sft import _EarlyStopper


def _run(stopper: _EarlyStopper, scores: list[float], every: int = 50) -> int | None:
    """The step at which the stopper ends training, or None if it never does."""
    for i, score in enumerate(scores, start=1):
        stopper.update(i * every, score)
        if stopper.should_stop:
            return i * every
    return None


def test_patience_stops_after_evaluations_without_gain_and_keeps_the_best():
    stopper = _EarlyStopper(patience=2, min_delta=0.0)
    assert _run(stopper, [0.1, 0.3, 0.2, 0.3, 0.4]) == 200  # 0.3 ties do not count as a gain
    assert (stopper.best, stopper.best_step) == (0.3, 100)


def test_min_steps_holds_off_a_stop_during_the_initial_near_zero_phase():
    scores = [0.004, 0.004, 0.004, 0.004, 0.07, 0.2, 0.25, 0.24, 0.23, 0.22]
    assert _run(_EarlyStopper(patience=3, min_delta=0.0), scores) == 200          # the degenerate stop
    held = _EarlyStopper(patience=3, min_delta=0.0, min_steps=250)
    assert _run(held, scores) == 500 and held.best == 0.25


def test_min_delta_demands_a_real_gain():
    stopper = _EarlyStopper(patience=2, min_delta=0.05)
    assert _run(stopper, [0.30, 0.33, 0.34]) == 150 and stopper.best_step == 50
