"""Feature extraction as the original ThinkSound does it: video decoding, MetaCLIP, T5, Synchformer.

Pure compute: no pipeline, storage or orchestration imports.
"""

from thinksound.features.extractor import FeatureExtractor
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
