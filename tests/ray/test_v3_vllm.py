"""vLLM (CPU) serves our DeepSeek-V3 checkpoint with the same teacher-forced logprobs as our model computes.

Tolerance: LOGPROB_ATOL = 1e-4 on per-token logprobs. Both sides run fp32 with the same weights; what differs is
summation order (vLLM's fused CPU MoE and attention kernels, its cached cos/sin table), i.e. ~1e-7 relative
roundoff per operation, measured at ~5e-7 after three layers here. 1e-4 leaves two orders of magnitude for other
CPUs and thread counts, while any semantic mismatch is far above it: routing without the router bias shifts the
logprobs by more than 1e-2 (checked below), and a wrong rope layout, softmax scale or expert weighting more still.
Greedy text would be the wrong check: random tiny models have near-ties that flip on roundoff.
"""

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from actors.model import DeepseekV3Config, DeepseekV3ForCausalLM
from actors.model import names
from actors.model.balancing import routers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

LOGPROB_ATOL = 1e-4
SEQUENCES = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [50, 40, 30, 20, 96, 0, 5], list(range(100, 60, -1)),
             [7, 7, 7, 7, 3, 3, 3, 3, 120, 121, 122, 7, 7]]

# Runs in a fresh interpreter: vLLM spawns and configures processes, which a test process should not inherit.
VLLM_SCRIPT = r"""
import json, sys
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    checkpoint, sequences, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    llm = LLM(model=checkpoint, dtype="float32", enforce_eager=True, skip_tokenizer_init=True, max_model_len=128,
              max_num_seqs=4, seed=0)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    results = llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False)
    logprobs = [[r.prompt_logprobs[i][s[i]].logprob for i in range(1, len(s))] for s, r in zip(sequences, results)]
    parameters = llm.collective_rpc(lambda worker: [n for n, _ in worker.model_runner.model.named_parameters()])[0]
    with open(out, "w") as f:
        json.dump({"logprobs": logprobs, "parameters": parameters}, f)
"""


def _served_by_vllm(checkpoint, out_file) -> dict:
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_MLA_DISABLE="1", VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run([sys.executable, "-c", VLLM_SCRIPT, str(checkpoint), json.dumps(SEQUENCES), str(out_file)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out_file.read_text())


@torch.no_grad()
def _our_logprobs(model: DeepseekV3ForCausalLM) -> list[torch.Tensor]:
    out = []
    for seq in SEQUENCES:
        ids = torch.tensor([seq])
        logprobs = model(ids).logits.float().log_softmax(-1)[0, :-1]
        out.append(logprobs.gather(-1, ids[0, 1:, None])[:, 0])
    return out


def _max_diff(ours: list[torch.Tensor], theirs: list[list[float]]) -> float:
    return max((a - torch.tensor(b)).abs().max().item() for a, b in zip(ours, theirs))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(DeepseekV3Config.tiny()).eval()
    for router in routers(model):
        router.e_score_correction_bias.normal_(0.0, 0.15)
    path = tmp_path_factory.mktemp("v3")
    model.save_pretrained(path)
    return model, path, _served_by_vllm(path, path / "vllm.json")


def test_vllm_prompt_logprobs_match_ours(served):
    model, _, vllm = served
    delta = _max_diff(_our_logprobs(model), vllm["logprobs"])
    print(f"max |dlogprob| ours vs vLLM CPU: {delta:.3e}")
    assert delta < LOGPROB_ATOL
    # The check has teeth: the same model routing without its bias is far outside the tolerance.
    unbiased = copy.deepcopy(model)
    for router in routers(unbiased):
        router.e_score_correction_bias.zero_()
    assert _max_diff(_our_logprobs(unbiased), vllm["logprobs"]) > 100 * LOGPROB_ATOL


def test_name_map_points_at_vllm_parameters(served):
    model, path, vllm = served
    parameters, cfg = set(vllm["parameters"]), model.config
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        on_disk = [k for k in f.keys() if not k.startswith(f"model.layers.{cfg.num_hidden_layers}.")]
    for hf_name in on_disk:
        assert names.to_vllm(hf_name, cfg)[0] in parameters, hf_name
