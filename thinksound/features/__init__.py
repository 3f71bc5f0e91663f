"""Feature extraction as the original ThinkSound does it: video decoding, MetaCLIP, T5, Synchformer.

Pure compute: no pipeline, storage or orchestration imports.

`FeatureExtractor` is imported on first use: it pulls in transformers, which takes seconds, and a
cached pipeline run that only probes videos and reads stored features never needs it.
"""

from typing import TYPE_CHECKING

from thinksound.features.record import TEXT_LENGTH, Features, TextFeatures, VideoFeatures
from thinksound.features.synchformer import Synchformer, SynchformerConfig
from thinksound.features.video import (
    DecodedClip,
    VideoDecodeError,
    VideoInfo,
    decode_clip,
    nominal_frame_counts,
    probe_video,
)

if TYPE_CHECKING:
    from thinksound.features.extractor import FeatureExtractor

__all__ = [
    "TEXT_LENGTH",
    "DecodedClip",
    "FeatureExtractor",
    "Features",
    "Synchformer",
    "SynchformerConfig",
    "TextFeatures",
    "VideoDecodeError",
    "VideoFeatures",
    "VideoInfo",
    "decode_clip",
    "nominal_frame_counts",
    "probe_video",
]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from thinksound.features.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
