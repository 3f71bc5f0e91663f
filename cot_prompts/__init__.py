"""Chain-of-thought captions for ThinkSound: versioned prompt data and the pure CoT logic.

Knows nothing of Prefect, DuckDB or the artifact stores; the pipeline's CoT task calls into it.
"""

from cot_prompts.budget import BudgetError, BudgetFit, fit_to_budget, split_sentences
from cot_prompts.cache import cot_cache_key
from cot_prompts.prompt import DEFAULT_PROMPT_VERSION, PromptTemplate, available_versions, load_prompt
from cot_prompts.provided import ProvidedBackend
from cot_prompts.server import VllmServer
from cot_prompts.types import T5_TOKEN_BUDGET, CotError, CotRequest, CotResult, TokenCounter
from cot_prompts.vllm_backend import VllmBackend

__all__ = [
    "DEFAULT_PROMPT_VERSION",
    "T5_TOKEN_BUDGET",
    "BudgetError",
    "BudgetFit",
    "CotError",
    "CotRequest",
    "CotResult",
    "PromptTemplate",
    "ProvidedBackend",
    "TokenCounter",
    "VllmBackend",
    "VllmServer",
    "available_versions",
    "cot_cache_key",
    "fit_to_budget",
    "load_prompt",
    "split_sentences",
]
