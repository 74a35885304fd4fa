"""SSL feature back-ends: fairseq and Hugging Face checkpoints, batched conv front end, registry.

Tiny randomly initialised models of every supported kind, with the standard 7-layer conv stack
(400-sample receptive field, 320 hop: 50 Hz) at 16 channels, 2 transformer layers of width 32.
"""
import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

from make_random_hubert import make_random_hubert, save_fairseq_checkpoint  # noqa: E402
from test_units import LANG, common, make_corpus, n_samples_of, units_of  # noqa: E402

from gsgn_fairseq.prep import extract_units, learn_kmeans
from gsgn_fairseq.data.mustc import DataError  # noqa: E402
from gsgn_fairseq.prep import ssl_features  # noqa: E402
from gsgn_fairseq.prep.ssl_features import (  # noqa: E402
    FEATURES, MfccFeatures, SslFeatures, build_features, checkpoint_sha1, load_fairseq_ssl, num_frames,
    register_feature,
)

LAYERS = 2
LENGTHS = [1600, 14400, 48000, 399, 400, 721]  # 0.1 s, 0.9 s, 3 s, under one frame, one frame, two frames
FAIRSEQ_CONV = "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2"
FAIRSEQ_TINY = dict(conv_feature_layers=FAIRSEQ_CONV, encoder_layers=LAYERS, encoder_embed_dim=32,
                    encoder_ffn_embed_dim=64, encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4)
HF_TINY = dict(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
               hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

# name -> (format, model type, config overrides, preprocessor do_normalize or None)
KINDS = {
    "fairseq-hubert-group": ("fairseq", "hubert", dict(extractor_mode="default"), True),
    "fairseq-hubert-layer": ("fairseq", "hubert", dict(extractor_mode="layer_norm", layer_norm_first=True), False),
    "fairseq-wav2vec2-group": ("fairseq", "wav2vec2", dict(extractor_mode="default"), False),
    "fairseq-wav2vec2-layer": ("fairseq", "wav2vec2", dict(extractor_mode="layer_norm", layer_norm_first=True), True),
    "fairseq-wav2vec2-posconv3": ("fairseq", "wav2vec2", dict(extractor_mode="layer_norm", pos_conv_depth=3), False),
    "hf-hubert-group": ("hf", "hubert", dict(feat_extract_norm="group"), None),
    "hf-hubert-layer": ("hf", "hubert", dict(feat_extract_norm="layer", do_stable_layer_norm=True), None),
    "hf-wavlm-group": ("hf", "wavlm", dict(feat_extract_norm="group"), True),
    "hf-wavlm-layer": ("hf", "wavlm", dict(feat_extract_norm="layer", do_stable_layer_norm=True), False),
    "hf-wav2vec2-group": ("hf", "wav2vec2", dict(feat_extract_norm="group"), None),
    "hf-wav2vec2-layer": ("hf", "wav2vec2", dict(feat_extract_norm="layer", do_stable_layer_norm=True), True),
    "hf-data2vec-audio": ("hf", "data2vec-audio", dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5), None),
}
GROUP_NORM_KINDS = [k for k in KINDS if k.endswith("-group")]


def _perturb_norms(params: dict, seed: int) -> None:
    """Random affine weights for the conv front end's norms (initialised to 1 and 0)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in params.items():
        if name.startswith("feature_extractor.") and p.dim() == 1:
            p.data.add_(0.3 * torch.randn(p.shape, generator=gen))


def make_fairseq(path: Path, model_type: str, overrides: dict, normalize: bool) -> Path:
    from fairseq import tasks
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec import Wav2Vec2Config
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf

    from gsgn_fairseq.fairseq_patches import checkpoint_compat  # noqa: F401

    if model_type == "hubert":
        make_random_hubert(path, preset="tiny", n_labels=8, normalize=normalize, **{**FAIRSEQ_TINY, **overrides})
    else:
        torch.manual_seed(0)
        cfg = OmegaConf.structured(FairseqConfig)
        cfg.task = OmegaConf.structured(AudioPretrainingConfig(_name="audio_pretraining", data=str(path.parent),
                                                               normalize=normalize))
        cfg.model = OmegaConf.structured(Wav2Vec2Config(_name="wav2vec2", **{**FAIRSEQ_TINY, **overrides}))
        task = tasks.setup_task(cfg.task)
        save_fairseq_checkpoint(path, cfg, task.build_model(cfg.model), task, criterion_name="Wav2vecCriterion")
    state = torch.load(path, weights_only=True)
    _perturb_norms(state["model"], seed=1)
    torch.save(state, path)
    return path


def hf_classes(model_type: str):
    import transformers

    names = {"hubert": ("HubertConfig", "HubertModel"), "wavlm": ("WavLMConfig", "WavLMModel"),
             "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
             "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel")}[model_type]
    return getattr(transformers, names[0]), getattr(transformers, names[1])


def make_hf(directory: Path, model_type: str, overrides: dict, do_normalize) -> Path:
    from transformers import Wav2Vec2FeatureExtractor

    config_cls, model_cls = hf_classes(model_type)
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**HF_TINY, **overrides}))
    _perturb_norms(dict(model.named_parameters()), seed=1)
    model.save_pretrained(directory)
    if do_normalize is not None:
        Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Builds each kind's checkpoint on first use: ``checkpoints(kind) -> path``."""
    root, built = tmp_path_factory.mktemp("ssl"), {}

    def get(kind: str) -> Path:
        if kind not in built:
            fmt, model_type, overrides, normalize = KINDS[kind]
            if fmt == "fairseq":
                built[kind] = make_fairseq(root / f"{kind}.pt", model_type, overrides, normalize)
            else:
                built[kind] = make_hf(root / kind, model_type, overrides, normalize)
        return built[kind]

    return get


def waveforms(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.3 * np.sin(np.arange(n) * rng.uniform(0.01, 0.2)) + 0.05 * rng.standard_normal(n)).astype(np.float32)
            for n in lengths]


def normalizes(kind: str) -> bool:
    """Whether a kind's waveforms are normalised: the fairseq task's ``normalize``, the HF
    preprocessor's ``do_normalize``, else HF's convention ``feat_extract_norm == "layer"``."""
    _, _, overrides, normalize = KINDS[kind]
    return normalize if normalize is not None else overrides.get("feat_extract_norm", "layer") == "layer"


def reference(kind: str, path: Path, wav: np.ndarray, layer: int) -> torch.Tensor:
    """Layer ``layer`` of one utterance from the model's own full forward: ``(T, D)``."""
    fmt, model_type, _, _ = KINDS[kind]
    if fmt == "fairseq":
        model, task_cfg, _ = load_fairseq_ssl(path)
        x = torch.from_numpy(wav).view(1, -1)
        if task_cfg.normalize:
            x = torch.nn.functional.layer_norm(x, x.shape[1:])
        last = layer == len(model.encoder.layers)  # the full forward (a pre-LN encoder's final norm)
        with torch.no_grad():
            if model_type == "hubert":
                out, _ = model.extract_features(x, padding_mask=None, mask=False, output_layer=None if last else layer)
            else:
                out = model.extract_features(x, None, mask=False, layer=None if last else layer - 1)["x"]
        return out[0]
    from transformers import Wav2Vec2FeatureExtractor

    model = hf_classes(model_type)[1].from_pretrained(path).eval()
    x = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([wav], None)[0] if normalizes(kind) else wav
    with torch.no_grad():
        return model(torch.from_numpy(x).view(1, -1), output_hidden_states=True).hidden_states[layer][0]


# ---------------------------------------------------------------- batching and layers


@pytest.mark.parametrize("kind", list(KINDS))
def test_batched_equals_per_utterance(checkpoints, kind):
    features = build_features("ssl", checkpoints(kind), layer=LAYERS)
    assert features.dim == 32 and features.name == "ssl"
    wavs = waveforms()
    batched = features(wavs)
    for n, wav, f in zip(LENGTHS, wavs, batched):
        assert f.shape == (num_frames(n), 32) and f.dtype == torch.float32
        alone = features([wav])[0]
        torch.testing.assert_close(f, alone, atol=1e-5, rtol=1e-4)
    assert batched[2].abs().mean() > 0.1  # not trivially zero


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("layer", [1, LAYERS])
def test_layer_is_the_models_own_hidden_state(checkpoints, kind, layer):
    """Layer L = hidden_states[L] (HF) = fairseq's extract_features at L, for L < last and L = last."""
    path = checkpoints(kind)
    wav = waveforms([14400], seed=3)[0]
    ours = SslFeatures(path, layer=layer)([wav])[0]
    torch.testing.assert_close(ours, reference(kind, path, wav, layer), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["fairseq-hubert-group", "hf-wavlm-group"])
def test_unmasked_group_norm_would_change_batched_features(checkpoints, kind, monkeypatch):
    """The first conv layer's group norm over a padded batch mixes padding into the statistics."""
    features = build_features("ssl", checkpoints(kind), layer=LAYERS)
    wavs = waveforms()
    alone = [features([w])[0] for w in wavs]
    monkeypatch.setattr(ssl_features, "masked_group_norm", lambda x, lengths, norm: norm(x))
    batched = features(wavs)
    assert not torch.allclose(batched[0], alone[0], atol=1e-3)  # the shortest, most padded
    torch.testing.assert_close(batched[2], alone[2], atol=1e-5, rtol=1e-4)  # the longest: no padding


@pytest.mark.parametrize("kind", ["hf-data2vec-audio", "fairseq-wav2vec2-posconv3"])
def test_stacked_positional_convs_need_masking(checkpoints, kind, monkeypatch):
    """Stacked positional conv stages would carry padded frames into the last valid ones."""
    features = build_features("ssl", checkpoints(kind), layer=LAYERS)
    assert len(features.trunk.pos_conv_stages) == 3
    wavs = waveforms()
    alone = features([wavs[0]])[0]
    monkeypatch.setattr(features.trunk, "pos_conv_stages", [])
    batched = features(wavs)[0]
    assert not torch.allclose(batched[-1], alone[-1], atol=1e-3)


def test_long_audio_in_chunks(checkpoints):
    features = SslFeatures(checkpoints("hf-hubert-group"), layer=LAYERS)
    assert not features.normalize  # so a chunk alone is the same input as inside the utterance
    wav = waveforms([16000])[0]
    chunked = SslFeatures(checkpoints("hf-hubert-group"), layer=LAYERS, max_chunk=4000)([wav])[0]
    assert chunked.shape == (num_frames(16000), 32)
    # chunks of 12 frames (3920 samples) start every 12 * 320 samples
    torch.testing.assert_close(chunked[12:24], features([wav[3840:3840 + 3920]])[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked[48:], features([wav[4 * 3840:]])[0], atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- loading, checks, provenance


def test_normalisation_follows_the_model_config(checkpoints):
    for kind in KINDS:
        assert SslFeatures(checkpoints(kind), layer=1).normalize is normalizes(kind), kind


def test_provenance(checkpoints):
    assert MfccFeatures().provenance == {"feature": "mfcc", "checkpoint_sha1": None, "layer": None}
    pt = checkpoints("fairseq-wav2vec2-group")
    prov = build_features("hubert", pt, layer=1).provenance
    assert prov == {"feature": "ssl", "checkpoint_sha1": hashlib.sha1(pt.read_bytes()).hexdigest(), "layer": 1,
                    "model_type": "wav2vec2", "format": "fairseq", "normalize": False}
    hf = checkpoints("hf-wavlm-group")
    prov = build_features("ssl", hf, layer=2).provenance
    sha1 = hashlib.sha1((hf / "config.json").read_bytes() + (hf / "model.safetensors").read_bytes()).hexdigest()
    assert prov == {"feature": "ssl", "checkpoint_sha1": sha1, "layer": 2, "model_type": "wavlm",
                    "format": "transformers", "normalize": True}
    (hf / "README.md").write_text("not part of the model\n")
    assert checkpoint_sha1(hf) == sha1


def test_hub_is_never_contacted(checkpoints, monkeypatch):
    path = checkpoints("hf-hubert-group")

    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert build_features("ssl", path, layer=1).model_type == "hubert"
    with pytest.raises(FileNotFoundError, match="SSL checkpoint not found: facebook/hubert-base-ls960"):
        build_features("ssl", Path("facebook/hubert-base-ls960"))


def test_other_frame_geometry_is_refused(tmp_path):
    d = make_hf(tmp_path / "hop160", "hubert", dict(conv_stride=(5, 2, 2, 2, 2, 2, 1)), None)
    with pytest.raises(DataError, match=r"hop160: conv receptive field/stride \(400, 160\) samples at 16000 Hz"):
        SslFeatures(d)
    from transformers import Wav2Vec2FeatureExtractor

    d = make_hf(tmp_path / "sr8k", "wavlm", {}, None)
    Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(d)
    with pytest.raises(DataError, match=r"sr8k: .*at 8000 Hz"):
        SslFeatures(d)


def test_bad_checkpoints(checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"--layer 3 out of range; the model has layers 1\.\.2"):
        SslFeatures(checkpoints("hf-wavlm-group"), layer=3)
    with pytest.raises(ValueError, match="--layer 0 out of range"):
        SslFeatures(checkpoints("fairseq-hubert-group"), layer=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no config\.json"):
        SslFeatures(empty)
    holed = Path(shutil.copytree(checkpoints("hf-hubert-group"), tmp_path / "holed"))
    from safetensors.torch import load_file, save_file

    weights = load_file(holed / "model.safetensors")
    del weights["encoder.layers.0.attention.k_proj.weight"]
    save_file(weights, holed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(DataError, match=r"holed: the weights lack .*encoder\.layers\.0\.attention\.k_proj\.weight"):
        SslFeatures(holed)
    from transformers import BertConfig

    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
    shutil.copy(holed / "model.safetensors", bert / "model.safetensors")
    with pytest.raises(DataError, match=r"bert: a 'bert' model; --feature ssl reads hubert"):
        SslFeatures(bert)
    unilm = tmp_path / "WavLM-Base.pt"
    torch.save({"cfg": {"encoder_layers": 2},
                "model": {"encoder.layers.0.self_attn.relative_attention_bias.weight": torch.zeros(4, 2)}}, unilm)
    with pytest.raises(DataError, match=r"WavLM-Base\.pt: an original \(microsoft/unilm\) WavLM checkpoint"):
        SslFeatures(unilm)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(DataError, match=r"notes\.pt: not a fairseq checkpoint"):
        SslFeatures(text)
    with pytest.raises(FileNotFoundError, match=r"SSL checkpoint not found: .*missing\.pt"):
        SslFeatures(tmp_path / "missing.pt")


# ---------------------------------------------------------------- registry


def test_registry(monkeypatch, tmp_path):
    assert {"mfcc", "ssl", "hubert"} <= set(FEATURES)
    assert FEATURES["hubert"] is FEATURES["ssl"] is SslFeatures and FEATURES["mfcc"] is MfccFeatures
    with pytest.raises(ValueError, match="'mfcc' is already registered"):
        register_feature("mfcc")(MfccFeatures)
    with pytest.raises(ValueError, match=r"unknown feature 'nope'; choose from hubert, mfcc, ssl"):
        build_features("nope")
    with pytest.raises(ValueError, match="--feature ssl .*needs --checkpoint"):
        build_features("ssl")
    with pytest.raises(ValueError, match="--feature mfcc reads no model"):
        build_features("mfcc", checkpoint=tmp_path / "x.pt")

    monkeypatch.setattr(ssl_features, "FEATURES", dict(FEATURES))

    @ssl_features.register_feature("zeros")
    class ZerosFeatures(ssl_features.FeatureBackend):
        name, dim = "zeros", 3

        @classmethod
        def from_options(cls, **kwargs):
            return cls()

        def __call__(self, wavs):
            return [torch.zeros(num_frames(len(w)), 3) for w in wavs]

    assert ssl_features.build_features("zeros")([np.zeros(720)])[0].shape == (2, 3)
    for script in (learn_kmeans, extract_units):  # --feature choices come from the registry
        choices = next(a.choices for a in script.get_parser()._actions if a.dest == "feature")
        assert choices == ["hubert", "mfcc", "ssl"]


def test_plugin_registration_does_not_import_prep():
    code = ("import sys, gsgn_fairseq; bad = [m for m in sys.modules if m.startswith(('gsgn_fairseq.prep', 'gsgn_fairseq.cli', "
            "'transformers'))]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------- scripts end to end


def test_hf_backend_end_to_end(checkpoints, tmp_path):
    root = make_corpus(tmp_path / "corpus")
    ckpt = str(checkpoints("hf-wavlm-group"))
    km = tmp_path / "km_wavlm.bin"
    learn_kmeans.main(common(root) + ["--feature", "ssl", "--checkpoint", ckpt, "--layer", "2", "--n-clusters", "4",
                                      "--n-init", "1", "--out", str(km), "--device", "cpu"])
    assert joblib.load(km).cluster_centers_.shape == (4, 32)
    extract_units.main(common(root) + ["--feature", "ssl", "--checkpoint", ckpt, "--layer", "2",
                                       "--km-model", str(km), "--device", "cpu", "--batch-seconds", "1.5"])
    lengths = n_samples_of(root)
    units = units_of(root)
    assert set(units) == set(lengths)
    for uid, u in units.items():
        assert u.dtype == np.int16 and len(u) == num_frames(lengths[uid]) and 0 <= u.min() and u.max() < 4
    assert len(np.unique(np.concatenate(list(units.values())))) > 1
    assert (root / f"en-{LANG}" / "units.zip").is_file()
