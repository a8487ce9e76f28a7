"""Multi-token prediction: the loss is the one the paper defines, it trains, inference ignores it, it round-trips."""

import pytest
import torch
import torch.nn.functional as F

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM
from actors.model.balancing import routers


def _model(depths: int = 1, weight: float = 0.3) -> DeepseekV3ForCausalLM:
    torch.manual_seed(0)
    return DeepseekV3ForCausalLM(DeepseekV3Config.tiny(num_nextn_predict_layers=depths, mtp_loss_weight=weight))


def test_mtp_loss_is_the_depth_one_prediction_of_token_t_plus_2():
    model = _model().train()
    ids = torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))
    out = model(ids, labels=ids)
    # By hand: h_i^1 = Norm(Block(W_eh [Norm(Emb(t_{i+1})); Norm(h_i^0)])), its logits predict t_{i+2}.
    with torch.no_grad():
        mtp = model.mtp[0]
        hidden, rope, _ = model.model(ids, torch.arange(10).expand(2, 10), None, None)
        x = mtp.eh_proj(torch.cat([mtp.enorm(model.model.embed_tokens(ids[:, 1:])), mtp.hnorm(hidden[:, :-1])], -1))
        cos, sin = (r[:, :-1] for r in rope)
        h, _ = mtp.block(x, cos, sin, None)
        logits = model.lm_head(mtp.norm(h))
        expected = F.cross_entropy(logits[:, :-1].reshape(-1, 128), ids[:, 2:].reshape(-1))
    assert out.mtp_loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert out.loss.item() == pytest.approx(out.lm_loss.item() + 0.3 * out.mtp_loss.item(), abs=1e-5)


def test_mtp_trains():
    model = _model(depths=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # A fixed cyclic pattern: token t+2 is predictable from the context, so MTP can learn it.
    ids = torch.arange(64).remainder(11).add(5).view(4, 16)
    before = [p.detach().clone() for p in model.mtp.parameters()]
    losses = []
    for _ in range(40):
        out = model(ids, labels=ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out.mtp_loss.item())
    print(f"MTP loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.5 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.mtp.parameters()))
    assert routers(model)[-1].load_accumulator.sum() > 0  # MTP blocks' MoE loads feed the bias update too


@torch.no_grad()
def test_inference_ignores_mtp():
    model = _model()
    ids = torch.randint(0, 128, (2, 10))
    model.eval()
    out = model(ids, labels=ids)
    assert out.mtp_loss is None and torch.equal(out.loss, out.lm_loss)
    for p in model.mtp.parameters():
        p.add_(1.0)
    assert torch.equal(model(ids).logits, out.logits)
    model.train()
    assert _model(weight=0.0).train()(ids, labels=ids).mtp_loss is None  # coefficient 0: not computed


def test_mtp_checkpoint_round_trips(tmp_path):
    model = _model(depths=2).train()
    for p in model.mtp.parameters():
        torch.nn.init.normal_(p, std=0.2)  # differ from any fresh init, norms included
    model.save_pretrained(tmp_path)
    loaded = DeepseekV3ForCausalLM.from_pretrained(tmp_path).train()
    assert loaded.config.num_nextn_predict_layers == 2 and loaded.config.mtp_loss_weight == 0.3
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = torch.randint(0, 128, (2, 12))
    assert model(ids, labels=ids).mtp_loss.item() == loaded(ids, labels=ids).mtp_loss.item()
