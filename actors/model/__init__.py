"""Our DeepSeek-V3 in PyTorch: MLA, DeepSeekMoE with auxiliary-loss-free balancing, MTP, HF/vLLM checkpoints."""

from .balancing import expert_load_metrics, update_router_bias
from .config import DeepseekV3Config
from .fp8 import FP8Recipe
from .layers import LinearFactory
from .model import CausalLMOutput, DeepseekV3ForCausalLM

__all__ = [
    "CausalLMOutput",
    "DeepseekV3Config",
    "DeepseekV3ForCausalLM",
    "FP8Recipe",
    "LinearFactory",
    "expert_load_metrics",
    "update_router_bias",
]
