"""Auxiliary-loss-free balancing: the bias update evens out a skewed router; the balance loss and metrics."""

import pytest
import torch

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM, expert_load_metrics, update_router_bias
from actors.model.balancing import max_over_mean, routers, sequence_balance_loss

HOT = (0, 1)  # the experts the skewed router prefers


def _skewed_model() -> DeepseekV3ForCausalLM:
    """Hidden states share a direction u, and the HOT experts' router rows point along it."""
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny(num_nextn_predict_layers=0, aux_loss_alpha=0.0))
    u = torch.randn(model.config.hidden_size)
    u = u / u.norm()
    with torch.no_grad():
        # Moderate, so tokens still differ: identical tokens would all flip together and no bias could split them.
        model.model.embed_tokens.weight += 0.3 * u
        for router in routers(model):
            router.weight[list(HOT)] += 1.5 * u
    return model


def _train(model: DeepseekV3ForCausalLM, gamma: float, steps: int) -> list[float]:
    """AdamW on next-token loss (no auxiliary loss), bias update after every step; returns per-step max/mean load."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.Generator().manual_seed(1)
    history = []
    model.train()
    for _ in range(steps):
        ids = torch.randint(0, 128, (16, 32), generator=data)
        out = model(ids, labels=ids)
        assert out.aux_loss is None
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(update_router_bias(model, gamma)["moe/load_max_over_mean"])
    return history


def test_bias_update_evens_out_a_skewed_router_without_aux_loss():
    steps = 60
    balanced = _train(_skewed_model(), gamma=0.01, steps=steps)
    unbalanced = _train(_skewed_model(), gamma=0.0, steps=steps)
    late, late_control = sum(balanced[-10:]) / 10, sum(unbalanced[-10:]) / 10
    print(f"max/mean load (mean over MoE layers): step 1 {balanced[0]:.2f}, steps {steps - 9}-{steps} {late:.2f}; "
          f"with gamma=0 {late_control:.2f}")
    assert balanced[0] > 2.0  # E/K = 8/3 is the ceiling: the hot experts take nearly every token
    assert late < 0.7 * balanced[0]
    assert late_control > 0.95 * unbalanced[0]  # training alone does not fix it; the bias does


def test_update_rule_moves_bias_by_gamma_against_the_load_and_resets_counts():
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny(num_nextn_predict_layers=1))
    first, second, mtp = routers(model)
    first.record_load(torch.tensor([10, 0, 5, 5, 5, 5, 5, 5]))  # mean 5
    second.record_load(torch.tensor([5] * 8))
    metrics = update_router_bias(model, gamma=0.01)
    torch.testing.assert_close(first.e_score_correction_bias, torch.tensor([-0.01, 0.01, 0, 0, 0, 0, 0, 0]))
    assert second.e_score_correction_bias.abs().max() == 0
    assert mtp.e_score_correction_bias.abs().max() == 0  # no tokens this step: untouched, not pushed up
    assert metrics["moe/layer1/load_max_over_mean"] == pytest.approx(2.0)
    assert metrics["moe/load_max_over_mean_worst"] == pytest.approx(2.0)
    assert metrics["moe/load_max_over_mean"] == pytest.approx(1.5)
    assert "moe/layer3/load_max_over_mean" not in metrics
    assert all(r.load_accumulator.sum() == 0 for r in routers(model))
    with pytest.raises(ValueError, match="gamma"):
        update_router_bias(model, gamma=-1.0)


def test_loads_accumulate_over_micro_batches_but_not_in_eval_or_no_grad():
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny(num_nextn_predict_layers=0))
    ids = torch.randint(0, 128, (2, 8))
    model.train()
    model(ids)
    model(ids)
    with torch.no_grad():
        model(ids)  # e.g. computing old logprobs in an RL step
    model.eval()
    model(ids)
    counts = routers(model)[0].load_accumulator
    assert int(counts.sum()) == 2 * ids.numel() * model.config.num_experts_per_tok
    assert expert_load_metrics(model)["moe/load_max_over_mean"] >= 1.0
    assert int(counts.sum()) > 0  # reading the metrics does not consume the counts


def test_sequence_balance_loss_formula_and_gradient():
    E = 4
    # Perfectly even routing with uniform affinities: f_i = 1, P_i = 1/E, so the loss is alpha.
    scores = torch.full((1, 4, E), 0.5)
    indices = torch.tensor([[[0, 1], [2, 3], [0, 2], [1, 3]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert sequence_balance_loss(scores, indices, mask, alpha=0.1).item() == pytest.approx(0.1)
    # Everything on experts 0, 1: f = (2, 2, 0, 0); affinities favour them too -> larger than alpha.
    skewed = torch.tensor([[[0.9, 0.9, 0.1, 0.1]] * 4])
    loss = sequence_balance_loss(skewed, torch.tensor([[[0, 1]] * 4]), mask, alpha=0.1)
    assert loss.item() == pytest.approx(0.1 * (2 * 0.45 + 2 * 0.45))
    # Padding does not count, and the loss reaches the router weights through the model.
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny(num_nextn_predict_layers=0, aux_loss_alpha=1e-2)).train()
    ids = torch.randint(0, 128, (2, 8))
    out = model(ids, attention_mask=torch.tensor([[1] * 8, [1] * 5 + [0] * 3]), labels=ids)
    assert out.aux_loss is not None and out.aux_loss > 0
    torch.autograd.backward(out.aux_loss)
    assert routers(model)[0].weight.grad.abs().sum() > 0


def test_max_over_mean():
    assert max_over_mean(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 1.0
    assert max_over_mean(torch.tensor([4.0, 0.0, 0.0, 0.0])) == 4.0
