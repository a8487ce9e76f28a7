"""GRPO's algorithm core against values computed by hand in the comments next to them."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from actors.losses import (
    aggregate,
    aggregate_parts,
    clipped_surrogate,
    entropy_from_logits,
    grpo_loss,
    kl_penalty,
    loss_normaliser,
    policy_loss,
    tis_weights,
    token_logprobs,
)
from orchestrator.algorithms import grpo
from orchestrator.algorithms.grpo import GRPOSpec, compute_advantages, register_advantage
from orchestrator.algorithms.sampling import (
    Refill,
    filter_groups,
    mask_truncated,
    refill,
    select_groups,
    split_minibatches,
)

LN2 = math.log(2.0)


def close(actual: torch.Tensor, expected, atol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, atol=atol, rtol=0), f"{actual} != {expected}"


# ---------------------------------------------------------------------------------------------- advantages
def test_grpo_advantages_use_the_sample_std():
    # Group [1, 0, 0]: mean 1/3, deviations (2/3, -1/3, -1/3), sample var (4/9 + 1/9 + 1/9) / 2 = 1/3,
    # std 0.57735 -> A = (1.1547, -0.57735, -0.57735). Group [.5, .5, .5]: no contrast -> 0.
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 0.5])
    close(compute_advantages(rewards, 3, "grpo", eps=0.0), [1.1547005, -0.5773503, -0.5773503, 0, 0, 0])


def test_grpo_advantages_with_interleaved_ids_and_a_singleton():
    # Group 7 = [1, 2, 3, 6]: mean 3, squared deviations 4+1+0+9 = 14, sample std sqrt(14/3) = 2.1602.
    # Group 3 = [0, 1]: sample std sqrt(0.5) -> +-0.70711 (the population std 0.5 would give +-1).
    # Group 9 = [5]: a group of one has no baseline -> 0.
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 3.0, 5.0, 6.0])
    ids = torch.tensor([7, 3, 7, 3, 7, 9, 7])
    close(compute_advantages(rewards, ids, "grpo", eps=0.0),
          [-0.9258201, -0.7071068, -0.4629100, 0.7071068, 0.0, 0.0, 1.3887301])
    # Default eps = 1e-6 changes these only in the sixth digit.
    close(compute_advantages(rewards, ids, "grpo"), [-0.9258201, -0.7071068, -0.4629100, 0.7071068, 0, 0,
                                                     1.3887301], atol=1e-5)


def test_dr_grpo_advantages_subtract_the_mean_only():
    rewards = torch.tensor([1.0, 0.0, 2.0, 1.0, 3.0, 5.0, 6.0])
    ids = torch.tensor([7, 3, 7, 3, 7, 9, 7])
    close(compute_advantages(rewards, ids, "dr_grpo"), [-2.0, -0.5, -1.0, 0.5, 0.0, 0.0, 3.0])


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo"])
def test_constant_groups_get_exactly_zero(mode):
    # mean(0.1, 0.1, 0.1) is 0.10000000000000002 in float64: without the explicit zeroing GRPO would return
    # -1.4e-17 / 1e-6, not 0.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.equal(compute_advantages(rewards, 3, mode), torch.zeros(6, dtype=torch.float64))
    assert torch.equal(compute_advantages(torch.tensor([4.0]), 1, mode), torch.zeros(1))


def test_advantage_errors_are_sentences():
    with pytest.raises(ValueError, match="known: dr_grpo, grpo"):
        compute_advantages(torch.zeros(4), 2, "rloo_typo")
    with pytest.raises(ValueError, match="5 samples do not split into groups of 2"):
        compute_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="one id per sample"):
        compute_advantages(torch.zeros(4), torch.zeros(3, dtype=torch.long))


def test_registered_and_dotted_path_estimators():
    @register_advantage("test_plus_one")
    def plus_one(rewards, index, eps):
        return rewards + 1.0

    try:
        # [0, 1] has contrast -> 1, 2; [3, 3] is constant -> zeroed whatever the estimator says.
        close(compute_advantages(torch.tensor([0.0, 1.0, 3.0, 3.0]), 2, "test_plus_one"), [1.0, 2.0, 0.0, 0.0])
        assert GRPOSpec(advantage="test_plus_one").advantage == "test_plus_one"
        with pytest.raises(ValueError, match="already registered"):
            register_advantage("test_plus_one")(lambda r, i, e: r)
    finally:
        grpo._ESTIMATORS.pop("test_plus_one")
    path = "orchestrator.algorithms.grpo:dr_grpo_advantages"
    close(compute_advantages(torch.tensor([0.0, 1.0]), 2, path), [-0.5, 0.5])


# ---------------------------------------------------------------------------------------------- surrogate
def surrogate_case():
    # old = 0, logp = log r, eps_low 0.2, eps_high 0.28 -> clip range [0.8, 1.28].
    # A = +2: r 1.5 -> clipped, -2 * 1.28 = -2.56 | r 1.1 -> -2.2 | r 0.5 -> -1.0 (min keeps r*A below range)
    # A = -1: r 1.5 -> 1.5 (min keeps r*A above range) | r 0.9 -> 0.9 | r 0.5 -> clipped, 0.8
    ratios = torch.tensor([[1.5, 1.1, 0.5], [1.5, 0.9, 0.5]])
    logprobs = ratios.log().requires_grad_()
    return logprobs, torch.zeros(2, 3), torch.tensor([2.0, -1.0]), torch.ones(2, 3, dtype=torch.bool)


def test_clipped_surrogate_takes_the_pessimistic_branch():
    logprobs, old, adv, mask = surrogate_case()
    loss, ratio, clipped = clipped_surrogate(logprobs, old, adv, mask, 0.2, 0.28)
    close(loss, [[-2.56, -2.2, -1.0], [1.5, 0.9, 0.8]], atol=1e-5)
    assert clipped.tolist() == [[True, False, False], [False, False, True]]
    close(ratio, [[1.5, 1.1, 0.5], [1.5, 0.9, 0.5]], atol=1e-6)


def test_gradient_is_zero_exactly_where_clipped():
    logprobs, old, adv, mask = surrogate_case()
    loss, _, _ = clipped_surrogate(logprobs, old, adv, mask, 0.2, 0.28)
    loss.sum().backward()
    # d(-A r)/d logp = -A r on unclipped tokens: (-2.2, -1.0) and (1.5, 0.9); 0 where clipped.
    close(logprobs.grad, [[0.0, -2.2, -1.0], [1.5, 0.9, 0.0]], atol=1e-5)


def test_policy_loss_token_mean_and_metrics():
    logprobs, old, adv, mask = surrogate_case()
    loss, metrics = policy_loss(logprobs, old, adv, mask, eps_low=0.2, eps_high=0.28)
    # (-2.56 - 2.2 - 1.0 + 1.5 + 0.9 + 0.8) / 6 = -2.56 / 6
    assert loss.item() == pytest.approx(-2.56 / 6, abs=1e-6)
    assert metrics["clip_frac"] == pytest.approx(2 / 6)
    assert metrics["ratio_mean"] == pytest.approx((1.5 + 1.1 + 0.5 + 1.5 + 0.9 + 0.5) / 6, abs=1e-6)
    # k3 old->new: r - 1 - ln r summed: 2 * 0.094535 + 0.004690 + 2 * 0.193147 + 0.005361 = 0.585415
    assert metrics["approx_kl"] == pytest.approx(0.585415 / 6, abs=1e-5)
    assert metrics["tokens"] == 6


def test_masked_garbage_never_reaches_loss_or_gradient():
    logprobs = torch.tensor([[-1.0, 500.0], [-2.0, float("-inf")]], requires_grad=True)
    old = torch.tensor([[-1.0, -500.0], [-2.0, 0.0]])
    mask = torch.tensor([[True, False], [True, False]])
    loss, _ = policy_loss(logprobs, old, torch.tensor([1.0, -1.0]), mask, ref_logprobs=old, kl_coef=0.1,
                          rollout_logprobs=torch.full((2, 2), float("-inf")), tis_cap=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[:, 1].tolist() == [0.0, 0.0]


def test_on_policy_old_logprobs_default_to_detached_current():
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    loss, metrics = policy_loss(logprobs, None, torch.tensor([1.0, -1.0]), torch.ones(2, 2, dtype=torch.bool))
    loss.backward()
    # r = 1 everywhere: loss = mean(-A) = 0, d/dlogp = -A r / 4 = (-0.25, +0.25) per row.
    assert loss.item() == 0.0 and metrics["clip_frac"] == 0.0
    close(logprobs.grad, [[-0.25, -0.25], [0.25, 0.25]])


# ---------------------------------------------------------------------------------------------- aggregation
def agg_case():
    # Lengths 4, 2 and 0 (an all-masked row is no sequence); inf on a masked position must not matter.
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, float("inf"), 0.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    return values, mask


@pytest.mark.parametrize("agg, norm, expected", [
    ("token_mean", None, 40 / 6),               # (1+2+3+4+10+20) / 6 tokens
    ("seq_mean_token_mean", None, 8.75),        # (10/4 + 30/2) / 2 sequences
    ("seq_mean_token_sum", None, 20.0),         # (10 + 30) / 2
    ("seq_mean_token_sum", 4.0, 5.0),           # (10/4 + 30/4) / 2: Dr.GRPO's constant divisor
])
def test_aggregations_on_unequal_lengths(agg, norm, expected):
    values, mask = agg_case()
    assert aggregate(values, mask, agg, token_sum_norm=norm).item() == pytest.approx(expected)


def test_aggregation_weights_tokens_differently():
    # Per-token loss -A r = -1 on rows of 4 and 2 tokens. Gradients: token_mean -1/6 everywhere;
    # seq_mean_token_mean -1/(2*4) on the long row, -1/(2*2) on the short one.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    expected = {"token_mean": [[-1 / 6] * 4, [-1 / 6] * 2 + [0, 0]],
                "seq_mean_token_mean": [[-1 / 8] * 4, [-1 / 4] * 2 + [0, 0]],
                "seq_mean_token_sum": [[-1 / 2] * 4, [-1 / 2] * 2 + [0, 0]]}
    for agg, grad in expected.items():
        logprobs = torch.zeros(2, 4, requires_grad=True)
        policy_loss(logprobs, None, torch.ones(2), mask, agg=agg)[0].backward()
        close(logprobs.grad, grad)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
def test_parts_with_a_global_normaliser_add_up_to_the_whole(agg):
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 0.0, 0.0], [6.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    whole = aggregate(values, mask, agg)
    norm = loss_normaliser(mask, agg)
    # Unequal parts (1 and 3 sequences), as micro-batches of different ranks may be after masking.
    assert norm == loss_normaliser(mask[:1], agg) + loss_normaliser(mask[1:], agg)
    parts = aggregate(values[:1], mask[:1], agg, norm) + aggregate(values[1:], mask[1:], agg, norm)
    assert parts.item() == pytest.approx(whole.item())
    # The mean of the parts' own means is wrong: token_mean (10/4 + 39/7) / 2 = 4.04 vs 49/11 = 4.45;
    # seq_mean_token_mean (2.5 + 7.25) / 2 = 4.875 vs 24.25/4; seq_mean_token_sum (10 + 13) / 2 vs 49/4.
    naive = (aggregate(values[:1], mask[:1], agg) + aggregate(values[1:], mask[1:], agg)) / 2
    assert naive.item() != pytest.approx(whole.item())
    total, local = aggregate_parts(values, mask, agg)
    assert (total / local).item() == pytest.approx(whole.item())


def test_normaliser_counts_tokens_or_non_empty_sequences():
    _, mask = agg_case()  # rows of 4, 2 and 0 trained tokens
    assert loss_normaliser(mask, "token_mean") == 6
    assert loss_normaliser(mask, "seq_mean_token_mean") == loss_normaliser(mask, "seq_mean_token_sum") == 2


def test_simulated_ranks_and_micro_batches_give_the_whole_batch_gradient():
    torch.manual_seed(0)
    logprobs = (-torch.rand(8, 5)).requires_grad_()
    old = logprobs.detach() + 0.3 * torch.randn(8, 5)
    adv = torch.randn(8)
    mask = torch.rand(8, 5) > 0.3
    policy_loss(logprobs, old, adv, mask)[0].backward()
    whole_grad = logprobs.grad.clone()
    logprobs.grad = None
    world, accum = 2, 2
    norm = loss_normaliser(mask, "token_mean")  # counted once over the whole step, all ranks
    for rows in torch.arange(8).split(2):  # rank r, micro-batch m
        loss, _ = policy_loss(logprobs[rows], old[rows], adv[rows], mask[rows], normaliser=norm)
        # What the trainer backward()s, and what DeepSpeed then does to it (1/accum, mean over ranks).
        ((loss * accum * world) / accum / world).backward()
    close(logprobs.grad, whole_grad, atol=1e-6)


def test_aggregation_errors():
    values, mask = agg_case()
    with pytest.raises(ValueError, match="choose one of token_mean"):
        aggregate(values, mask, "sum")
    with pytest.raises(ValueError, match="positive count"):
        aggregate(values, mask, "token_mean", normaliser=0)
    assert aggregate(values, torch.zeros_like(mask), "token_mean").item() == 0.0


# ---------------------------------------------------------------------------------------------- KL, entropy
def test_k1_and_k3_values():
    logp = torch.tensor([math.log(0.5), math.log(0.25), -1.0])
    ref = torch.tensor([math.log(0.25), math.log(0.5), -1.0])
    # d = ref - logp = (-ln2, +ln2, 0); k1 = -d; k3 = e^d - d - 1 = (0.5 + ln2 - 1, 2 - ln2 - 1, 0).
    close(kl_penalty(logp, ref, "k1"), [LN2, -LN2, 0.0])
    close(kl_penalty(logp, ref, "k3"), [0.1931472, 0.3068528, 0.0])
    torch.manual_seed(0)
    k3 = kl_penalty(torch.randn(1000) * 5, torch.randn(1000) * 5, "k3")
    assert (k3 >= 0).all() and torch.isfinite(k3).all()
    with pytest.raises(ValueError, match="k1, k3"):
        kl_penalty(logp, ref, "k2")


def test_kl_term_in_the_loss():
    logprobs = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.5)]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # A = 0: the surrogate is 0; loss = 0.1 * mean(k3) = 0.1 * (0.1931472 + 0.3068528) / 2 = 0.025.
    loss, metrics = policy_loss(logprobs, None, torch.zeros(1), mask, ref_logprobs=ref, kl_coef=0.1)
    assert loss.item() == pytest.approx(0.025, abs=1e-6) and metrics["kl"] == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_loss(logprobs, None, torch.zeros(1), mask, kl_coef=0.1)
    assert "kl" not in policy_loss(logprobs, None, torch.zeros(1), mask)[1]  # kl_coef 0: no reference needed


def test_entropy_and_token_logprobs_by_hand():
    # V = 2. [0, 0]: H = ln 2. [0, ln 3]: p = (1/4, 3/4), H = 0.5623351; at temperature 2: p proportional to
    # (1, sqrt 3) = (0.3660254, 0.6339746), H = 0.6568064.
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)]]])
    close(entropy_from_logits(logits), [[LN2, 0.5623351]])
    close(entropy_from_logits(logits, temperature=2.0)[:, 1], [0.6568064])
    close(token_logprobs(logits, torch.tensor([[0, 1]])), [[-LN2, math.log(0.75)]])
    close(token_logprobs(logits, torch.tensor([[0, 0]]), temperature=2.0)[:, 1], [math.log(0.3660254)])


def test_chunked_entropy_matches_the_full_computation_with_gradients():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    full = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    (g_full,) = torch.autograd.grad(full.sum(), logits)
    chunked = entropy_from_logits(logits, chunk_size=2)  # chunks of 2, 2, 1 positions, checkpointed
    (g_chunked,) = torch.autograd.grad(chunked.sum(), logits)
    close(chunked, full.detach(), atol=1e-5)
    close(g_chunked, g_full, atol=1e-5)
    targets = torch.randint(0, 7, (2, 5))
    close(token_logprobs(logits, targets, chunk_size=3).detach(),
          logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1).detach(), atol=1e-5)


def test_entropy_bonus_lowers_the_loss():
    mask = torch.ones(1, 2, dtype=torch.bool)
    entropy = torch.tensor([[LN2, 0.5623351]])
    loss, metrics = policy_loss(torch.zeros(1, 2), None, torch.zeros(1), mask, entropy=entropy, entropy_coef=0.01)
    # 0 - 0.01 * (0.6931472 + 0.5623351) / 2
    assert loss.item() == pytest.approx(-0.006277412, abs=1e-7)
    assert metrics["entropy"] == pytest.approx(0.6277412, abs=1e-6)


# ---------------------------------------------------------------------------------------------- TIS
def test_tis_weights_are_capped_and_detached():
    old = torch.full((3,), math.log(0.5), requires_grad=True)
    rollout = torch.tensor([math.log(0.5), math.log(0.4), math.log(0.1)])
    # exp(old - rollout) = (1, 1.25, 5) -> capped at 2.
    weights = tis_weights(old, rollout, cap=2.0)
    close(weights, [1.0, 1.25, 2.0], atol=1e-6)
    assert not weights.requires_grad


def test_tis_weight_multiplies_the_surrogate():
    old = torch.full((1, 3), math.log(0.5))
    rollout = torch.tensor([[math.log(0.5), math.log(0.4), math.log(0.1)]])
    logprobs = old.clone().requires_grad_()
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, metrics = policy_loss(logprobs, old, torch.ones(1), mask, rollout_logprobs=rollout, tis_cap=2.0)
    loss.backward()
    # r = 1, A = 1: per token -w = (-1, -1.25, -2); mean -1.4166667; gradient -w / 3.
    assert loss.item() == pytest.approx(-4.25 / 3, abs=1e-6)
    close(logprobs.grad, [[-1 / 3, -1.25 / 3, -2 / 3]], atol=1e-6)
    assert metrics["tis_capped_frac"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="both rollout_logprobs and tis_cap"):
        policy_loss(logprobs, old, torch.ones(1), mask, rollout_logprobs=rollout)


def test_grpo_loss_follows_the_spec():
    old = torch.full((1, 3), math.log(0.5))
    rollout = torch.tensor([[math.log(0.5), math.log(0.4), math.log(0.1)]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    trainer_spec = GRPOSpec().loss_settings(temperature=1.0)
    rollout_spec = GRPOSpec(logprobs_source="rollout", tis_cap=2.0).loss_settings(temperature=1.0)
    # trainer source ignores the engine's logprobs: loss -1; rollout source applies the weights above.
    assert grpo_loss(trainer_spec, old, old, torch.ones(1), mask, rollout_logprobs=rollout)[0].item() == -1.0
    assert grpo_loss(rollout_spec, old, old, torch.ones(1), mask,
                     rollout_logprobs=rollout)[0].item() == pytest.approx(-4.25 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="rollout engine's logprobs"):
        grpo_loss(rollout_spec, old, old, torch.ones(1), mask)


# ---------------------------------------------------------------------------------------------- sampling
def test_filter_groups_drops_groups_without_contrast():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    assert filter_groups(rewards, 3).tolist() == [True] * 3 + [False] * 6 + [True] * 3
    ids = torch.tensor([4, 4, 2, 9, 9])  # 4: (1, 0) kept; 2: a singleton, dropped; 9: (1, 1) dropped
    assert filter_groups(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]), ids).tolist() == [True, True, False, False,
                                                                                   False]


def test_select_groups_keeps_the_first_ones():
    groups = torch.tensor([5, 5, 1, 1, 3, 3])
    keep = torch.tensor([True, True, False, False, True, True])
    assert select_groups(keep, groups, 1).tolist() == [True, True, False, False, False, False]
    assert select_groups(keep, groups, 5).tolist() == keep.tolist()


def test_refill_plan():
    # 2 of 8 prompts kept, 2 missing: 2 * 8 / 2 = 8 prompts, capped at one batch of 4.
    assert refill(2, 4, 8, 0, 3) == Refill(draw=4, exhausted=False)
    # 3 of 4 kept, 1 missing: ceil(1 * 4 / 3) = 2.
    assert refill(3, 4, 4, 0, 3) == Refill(draw=2, exhausted=False)
    assert refill(0, 4, 4, 1, 3) == Refill(draw=4, exhausted=False)  # no rate yet: a whole batch
    assert refill(3, 4, 12, 3, 3) == Refill(draw=0, exhausted=True)  # cap reached
    assert refill(5, 4, 8, 0, 3) == Refill(draw=0, exhausted=False)  # full
    assert refill(1, 4, 4, 0, 0) == Refill(draw=0, exhausted=True)  # max_refill_rounds 0: filter only


def test_mask_truncated():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    out = mask_truncated(mask, ["stop", "length", "stop"])
    assert out.tolist() == [[True, True, False], [False, False, False], [True, False, False]]
    assert mask_truncated(mask.float(), ["length", "stop", "stop"]).tolist() == [[0, 0, 0], [1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="2 finish reasons for 3 sequences"):
        mask_truncated(mask, ["stop", "stop"])


def test_split_minibatches_keeps_groups_whole_and_is_deterministic():
    groups = torch.arange(24) // 3  # 8 groups of 3
    for seed in range(3):
        parts = split_minibatches(groups, 4, seed=seed)
        assert sorted(torch.cat(parts).tolist()) == list(range(24))
        for part in parts:
            assert len(part) == 6 and part.tolist() == sorted(part.tolist())
            for g in groups[part].unique():
                assert (groups[part] == g).sum() == 3  # the whole group is here
        assert [p.tolist() for p in split_minibatches(groups, 4, seed=seed)] == [p.tolist() for p in parts]
    assert len({tuple(split_minibatches(groups, 4, seed=s)[0].tolist()) for s in range(10)}) > 1
    groups = torch.arange(12) // 3  # 4 groups of 3
    loose = split_minibatches(groups, 5, seed=0, keep_groups=False)
    assert sorted(torch.cat(loose).tolist()) == list(range(12)) and [len(p) for p in loose] == [3, 3, 2, 2, 2]
    with pytest.raises(ValueError, match="Cannot split 4 groups into 5 mini-batches"):
        split_minibatches(groups, 5, seed=0)


# ---------------------------------------------------------------------------------------------- config
def test_spec_defaults_and_errors():
    spec = GRPOSpec()
    assert (spec.n, spec.advantage, spec.eps_low, spec.eps_high, spec.loss_agg) == (8, "grpo", 0.2, 0.28,
                                                                                    "token_mean")
    assert (spec.kl_coef, spec.kl_estimator, spec.mini_batches, spec.logprobs_source) == (0.0, "k3", 1, "trainer")
    with pytest.raises(ValidationError, match="known: dr_grpo, grpo"):
        GRPOSpec(advantage="ppo")
    with pytest.raises(ValidationError, match="token_sum_norm applies only"):
        GRPOSpec(token_sum_norm=1024)
    assert GRPOSpec(loss_agg="seq_mean_token_sum", token_sum_norm=1024).token_sum_norm == 1024
    with pytest.raises(ValidationError, match="Extra inputs"):
        GRPOSpec(epsilon=0.2)
    with pytest.raises(ValidationError):
        GRPOSpec(n=1)
