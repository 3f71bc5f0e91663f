"""CLAP score and the AudioSet speech/music tagger on tiny random models built offline: resampling,
front ends against transformers' own feature extractors and forwards, label lookup, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from transformers import ASTFeatureExtractor, ClapFeatureExtractor, ClapModel

from thinksound.qc.clap import ClapScorer
from thinksound.qc.frontend import resample
from thinksound.qc.tagger import AudioTagger, window_starts
from thinksound.qc.tiny import build_tiny_qc

CPU = torch.device("cpu")
SR = 44100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_qc(tmp_path_factory.mktemp("qc"), seed=0)


@pytest.fixture(scope="module")
def clap(tiny) -> ClapScorer:
    return ClapScorer.from_pretrained(tiny.clap, device=CPU, dtype=torch.float32, local_files_only=True)


@pytest.fixture(scope="module")
def tagger(tiny) -> AudioTagger:
    return AudioTagger.from_pretrained(tiny.tagger, device=CPU, dtype=torch.float32, local_files_only=True)


def _tone(freq: float, seconds: float, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


def _clip(seconds: float, seed: int) -> np.ndarray:
    """(2, samples) stereo noise plus a tone, like a generated clip."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, int(seconds * SR))) * 0.05 + 0.3 * _tone(440 + 100 * seed, seconds)).astype(
        np.float32
    )


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_resampling_keeps_pitch_and_removes_what_the_target_cannot_hold():
    up = resample(_tone(1000, 1.0), SR, 48000)
    assert up.shape == (48000,) and up.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(up))
    assert np.argmax(spectrum) * 48000 / len(up) == pytest.approx(1000, abs=1.0)
    down = resample(_tone(1000, 1.0), SR, 16000)
    assert _rms(down[200:-200]) == pytest.approx(_rms(_tone(1000, 1.0)), rel=0.01)
    # 12 kHz is above 16 kHz's Nyquist: a naive decimation would fold it to 4 kHz at full level.
    aliased = resample(_tone(12000, 1.0), SR, 16000)
    assert _rms(aliased[200:-200]) < 1e-3 * _rms(_tone(12000, 1.0))
    assert np.array_equal(resample(up, 48000, 48000), up)


def test_clap_features_are_the_processors_on_48k_mono(clap):
    clip = _clip(3.0, seed=1)
    ours = clap.features([clip], SR)
    mono48 = resample_poly(clip.mean(axis=0).astype(np.float64), 160, 147)[: 3 * 48000].astype(np.float32)
    ref = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")(
        [mono48], sampling_rate=48000, return_tensors="pt"
    )
    assert ours["input_features"].shape == ref["input_features"].shape == (1, 1, 1001, 64)
    assert torch.allclose(ours["input_features"], ref["input_features"], atol=1e-5)


def test_clap_score_is_the_models_own_cosine_and_batches(clap, tiny):
    clips = [_clip(2.0, seed=2), _clip(4.5, seed=3)]
    texts = ["a dog barks twice", "rain on a tin roof"]
    scores = clap.score(clips, SR, texts)
    assert len(scores) == 2 and all(-1.0 <= s <= 1.0 for s in scores)
    model = ClapModel.from_pretrained(str(tiny.clap)).eval()
    feats = clap.features(clips, SR)
    tokens = clap.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                    input_features=feats["input_features"])
    ref = (out.audio_embeds * out.text_embeds).sum(-1)
    assert scores == pytest.approx(ref.tolist(), abs=1e-5)
    singles = [clap.score([c], SR, [t])[0] for c, t in zip(clips, texts, strict=True)]
    assert scores == pytest.approx(singles, abs=1e-5)
    assert clap.score(clips, SR, texts) == scores


def test_clap_long_clip_is_cut_deterministically(clap):
    long = _clip(12.0, seed=4)
    first = clap.score([long], SR, ["wind"])
    assert clap.score([long], SR, ["wind"]) == first
    assert first == pytest.approx(clap.score([long[:, : 10 * SR]], SR, ["wind"]), abs=1e-5)


def test_clap_refuses_a_feature_extractor_at_another_rate(clap):
    with pytest.raises(ValueError, match="48 kHz"):
        ClapScorer(model=clap.model, feature_extractor=ClapFeatureExtractor(sampling_rate=44100),
                   tokenizer=clap.tokenizer, device=CPU, dtype=torch.float32)


def test_tagger_finds_speech_and_music_by_ontology_name(tagger):
    assert tagger.class_ids == {"speech": 0, "music": 137}
    config = tagger.model.config
    renamed = dict(config.id2label) | {137: "Musical instrument"}
    config_copy = type(config).from_dict({**config.to_dict(), "id2label": renamed})
    model = type(tagger.model)(config_copy)
    with pytest.raises(ValueError, match="Music"):
        AudioTagger(model=model, feature_extractor=tagger.feature_extractor, device=CPU, dtype=torch.float32)


def test_window_layout():
    sr = 16000
    assert window_starts(3 * sr, int(5.12 * sr), int(2.56 * sr)) == [0]
    assert window_starts(10 * sr, int(5.12 * sr), int(2.56 * sr)) == [0, int(2.56 * sr), 10 * sr - int(5.12 * sr)]


def test_tagger_probabilities_are_the_models_sigmoid_on_the_extractors_input(tagger):
    clips = [_clip(3.0, seed=5), _clip(10.0, seed=6)]
    series = tagger.tag(clips, SR)
    assert series[0].times_sec == (0.0,)
    assert series[1].times_sec == (0.0, 2.56, 4.88)
    mono16 = resample(clips[1].mean(axis=0), SR, 16000)
    window = mono16[int(2.56 * 16000) : int(2.56 * 16000) + int(5.12 * 16000)]
    feats = ASTFeatureExtractor()([window], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        probs = tagger.model(input_values=feats["input_values"]).logits.sigmoid()[0]
    assert series[1].probabilities["speech"][1] == pytest.approx(probs[0].item(), abs=1e-6)
    assert series[1].probabilities["music"][1] == pytest.approx(probs[137].item(), abs=1e-6)
    assert series[1].peak("speech") == max(series[1].probabilities["speech"])
    alone = tagger.tag([clips[0]], SR)[0]
    assert alone.probabilities["speech"] == pytest.approx(series[0].probabilities["speech"], abs=1e-6)
