"""Cache key of one CoT: what the item is, what describes it, and with which prompt."""

from __future__ import annotations

import hashlib

from cot_prompts.prompt import canonical_json
from cot_prompts.types import CotRequest

# Bump when the meaning of a cached CoT changes without any of the inputs below changing.
CACHE_KEY_VERSION = 1


def cot_cache_key(request: CotRequest, backend_identity: str, prompt_hash: str | None) -> str:
    """sha256 over the item's content identity and texts, the backend identity and the prompt hash.

    The video path is left out on purpose: `item_id` already names the content (hash plus segment), so
    the same bytes under another name hit the same entry.
    """
    fields = {
        "v": CACHE_KEY_VERSION,
        "item": request.item_id,
        "start": round(request.start_sec, 3),
        "duration": round(request.duration_sec, 3),
        "caption": request.caption or "",
        "caption_cot": request.caption_cot or "",
        "backend": backend_identity,
        "prompt": prompt_hash or "",
    }
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
