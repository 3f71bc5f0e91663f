"""CoT from the manifest: the user's own text, a templated CoT built from the caption, or nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from cot_prompts.budget import cut_to_budget, normalize_text
from cot_prompts.prompt import PromptTemplate, load_prompt
from cot_prompts.types import T5_TOKEN_BUDGET, CotRequest, CotResult, TokenCounter

logger = logging.getLogger(__name__)


class ProvidedBackend:
    """Validates manifest texts against the T5 budget; never calls a model.

    - `caption_cot` given: backend 'provided'; over budget it is cut at the budget, as the original's
      T5 encoder does, with a warning, `shortened` set and the tokens cut in `t5_truncated_tokens`.
    - only `caption` given: backend 'template', a CoT filled in from the prompt's `fallback_cot` (cut
      the same way). It is recorded under that name and is not model output.
    - neither: backend 'none', empty texts; the generator then uses its learned empty-text features.
    """

    def __init__(
        self,
        count_t5_tokens: TokenCounter,
        max_t5_tokens: int = T5_TOKEN_BUDGET,
        *,
        prompt: PromptTemplate | None = None,
    ) -> None:
        if max_t5_tokens < 1:
            raise ValueError(f"{max_t5_tokens=} must be positive")
        self.count_t5_tokens = count_t5_tokens
        self.max_t5_tokens = max_t5_tokens
        self.prompt = prompt or load_prompt()

    @property
    def identity(self) -> str:
        return f"provided:t5max={self.max_t5_tokens}:cut:fallback={self.prompt.version}"

    def generate(self, requests: Sequence[CotRequest]) -> list[CotResult]:
        return [self.describe(request) for request in requests]

    def describe(self, request: CotRequest) -> CotResult:
        started = time.perf_counter()
        caption = normalize_text(request.caption or "")
        cot = normalize_text(request.caption_cot or "")
        if cot:
            backend, text, version, digest = "provided", cot, None, None
        elif caption:
            text = self.prompt.fallback_cot.format(caption=caption)
            backend, version, digest = "template", self.prompt.version, self.prompt.hash
        else:
            return CotResult(
                item_id=request.item_id,
                caption="",
                caption_cot="",
                backend="none",
                model=None,
                prompt_version=None,
                prompt_hash=None,
                raw_answer=None,
                parsed=None,
                t5_tokens=0,
                shortened=False,
                latency_s=time.perf_counter() - started,
                retries=0,
                error=None,
            )
        fit = cut_to_budget(text, count_tokens=self.count_t5_tokens, max_tokens=self.max_t5_tokens)
        if fit.shortened:
            logger.warning(
                "item %s: the %s CoT has %d T5 tokens, over the %d the encoder reads: cut to %d, as the "
                "original does",
                request.item_id, backend, fit.tokens, self.max_t5_tokens, fit.fitted_tokens,
            )
        return CotResult(
            item_id=request.item_id,
            caption=caption,
            caption_cot=fit.text,
            backend=backend,
            model=None,
            prompt_version=version,
            prompt_hash=digest,
            raw_answer=text,
            parsed=None,
            t5_tokens=fit.tokens,
            shortened=fit.shortened,
            latency_s=time.perf_counter() - started,
            retries=0,
            error=None,
            t5_truncated_tokens=fit.tokens - fit.fitted_tokens,
        )
