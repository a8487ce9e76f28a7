"""Work split over actor groups (orchestrator/stages/fanout.py), with stand-in groups: order, even cuts, and the
trainer ranks' agreement check."""

from __future__ import annotations

import pytest

from orchestrator.stages.fanout import even_bounds, ranks_agree


class Ranks:
    """Stand-in for an ActorGroup of trainers: `call` returns one result per rank."""

    def __init__(self, sums: list[float]):
        self.sums = sums

    def call(self, method: str, *args):
        assert method == "parameter_checksum" and not args
        return list(self.sums)


def test_even_bounds_cover_every_item_once_in_runs_that_differ_by_at_most_one():
    for n, parts in ((0, 3), (7, 3), (8, 2), (5, 5), (3, 4)):
        cuts = even_bounds(n, parts)
        sizes = [b - a for a, b in zip(cuts, cuts[1:])]
        assert cuts[0] == 0 and cuts[-1] == n and len(sizes) == parts
        assert max(sizes) - min(sizes) <= 1


def test_ranks_that_agree_give_their_checksums_and_ranks_that_differ_fail_the_stage():
    assert ranks_agree(Ranks([12.5, 12.5, 12.5])) == [12.5, 12.5, 12.5]
    assert ranks_agree(Ranks([3.0])) == [3.0]
    # Exactly, not approximately: data-parallel ranks are bit-identical (tests/ray/test_trainer.py), so even the
    # last bit of a double differing means a rank trained on something else.
    with pytest.raises(RuntimeError, match=r"trainer ranks hold different weights \(parameter sums \[1.0, "):
        ranks_agree(Ranks([1.0, 1.0 + 2 ** -52]))
