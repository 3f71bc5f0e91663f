"""Quality checks that listen: DeSync (Synchformer), CLAP text-audio agreement, AudioSet speech/music tags.

Pure compute: no pipeline, storage or orchestration imports. The transformers-backed scorers are
imported from their modules (``thinksound.qc.clap``, ``thinksound.qc.tagger``) on first use.
"""

from thinksound.qc.desync import SyncResult, SyncScorer, load_sync_scorer
from thinksound.qc.frontend import SyncMel, SyncMelConfig, resample
from thinksound.qc.sync_audio import AudioBranchConfig, SynchformerAudio
from thinksound.qc.sync_head import GlobalTransformer, SyncHeadConfig

__all__ = [
    "AudioBranchConfig",
    "GlobalTransformer",
    "SyncHeadConfig",
    "SyncMel",
    "SyncMelConfig",
    "SyncResult",
    "SyncScorer",
    "SynchformerAudio",
    "load_sync_scorer",
    "resample",
]
