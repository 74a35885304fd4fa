#!/usr/bin/env python
"""Write a randomly initialised HuBERT checkpoint in fairseq's format.

For tests and benchmarks where real weights cannot be downloaded: the checkpoint goes through
exactly the loading path a released ``hubert_base_ls960.pt`` takes
(``checkpoint_utils.load_model_ensemble_and_task``, label dictionaries from ``task_state``).
Presets keep HuBERT-base's conv kernels and strides (400-sample receptive field, 320 stride:
50 Hz frames):

- ``base``: HuBERT-base's size (512-channel CNN, 12 layers, d=768, FFN 3072, 12 heads; ~95M);
- ``tiny``: 32-channel CNN, 2 layers, d=32 (for unit tests).

    python scripts/make_random_hubert.py --preset base --out /tmp/hubert_base_random.pt
"""
import argparse
from pathlib import Path

import torch

PRESETS = {
    "base": dict(conv_feature_layers="[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
                 encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
                 encoder_attention_heads=12),
    "tiny": dict(conv_feature_layers="[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2",
                 encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                 encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4),
}


def save_fairseq_checkpoint(path: Path, cfg, model, task, criterion_name: str = "HubertCriterion") -> None:
    """Save as fairseq's Trainer.state_dict + checkpoint_utils.torch_persistent_save do."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    state = {
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": criterion_name, "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": task.state_dict(),
        "extra_state": {"metrics": {}, "previous_training_time": 0.0},
    }
    checkpoint_utils.torch_persistent_save(state, str(path))


def make_random_hubert(out: Path, preset: str = "tiny", n_labels: int = 100, seed: int = 0,
                       normalize: bool = False, **model_overrides) -> Path:
    """Build fairseq's HubertModel with random weights and save it to ``out``.

    ``model_overrides`` are HubertConfig fields set on top of the preset (e.g.
    ``extractor_mode="layer_norm", layer_norm_first=True`` for HuBERT-large's layout).
    """
    import tempfile

    from fairseq import tasks
    from fairseq.data import Dictionary
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
    from omegaconf import OmegaConf

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    out = Path(out)
    with tempfile.TemporaryDirectory() as label_dir:
        labels = Dictionary()
        for i in range(n_labels):
            labels.add_symbol(str(i))
        labels.save(str(Path(label_dir) / "dict.km.txt"))
        torch.manual_seed(seed)
        cfg = OmegaConf.structured(FairseqConfig)
        cfg.task = OmegaConf.structured(HubertPretrainingConfig(
            _name="hubert_pretraining", data=label_dir, labels=["km"], label_rate=50.0, normalize=normalize))
        model_cfg = {**PRESETS[preset], **model_overrides}
        cfg.model = OmegaConf.structured(HubertConfig(_name="hubert", label_rate=50, **model_cfg))
        task = tasks.setup_task(cfg.task)
        model = task.build_model(cfg.model)
        # the label dictionaries travel in task_state, as in a released checkpoint
        save_fairseq_checkpoint(out, cfg, model, task)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="base")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-labels", type=int, default=500)
    p.add_argument("--normalize", action="store_true", help="checkpoint's task normalizes the waveform")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    make_random_hubert(args.out, args.preset, args.n_labels, args.seed, args.normalize)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
