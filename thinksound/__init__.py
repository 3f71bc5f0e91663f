"""ThinkSound generator: checkpoint-compatible MM-DiT, Oobleck VAE and flow-matching sampler.

Pure torch: imports nothing from the pipeline (Prefect, DuckDB, MinIO).
"""

from thinksound.audio import peak_normalize, to_int16
from thinksound.config import DiTConfig, GeneratorConfig, VAEConfig, from_original_json
from thinksound.generator import Generator
from thinksound.sampler import euler, sample_euler
from thinksound.synthesis import synthesize

__all__ = [
    "DiTConfig",
    "Generator",
    "GeneratorConfig",
    "VAEConfig",
    "euler",
    "from_original_json",
    "peak_normalize",
    "sample_euler",
    "synthesize",
    "to_int16",
]
