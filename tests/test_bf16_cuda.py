"""fairseq 0.12 turns --bf16 into --tpu; the plugin keeps bf16 runs on a CUDA GPU."""
import pytest
import torch
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.distributed import utils as distributed_utils

import gsgn_fairseq  # noqa: F401  (installs the wrapper)
from gsgn_fairseq.fairseq_patches import bf16_cuda


def _cfg(*extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["--task", "dummy_lm", "--arch", "transformer_lm", *extra]
    )
    return convert_namespace_to_omegaconf(args)


def test_fairseq_itself_sets_tpu_with_bf16():
    cfg = _cfg("--bf16")
    assert cfg.common.tpu and cfg.distributed_training.tpu  # the behaviour this module undoes


@pytest.mark.parametrize("cuda,extra,cleared", [
    (True, ["--bf16"], True),
    (False, ["--bf16"], False),           # no GPU: leave fairseq's choice
    (True, ["--bf16", "--cpu"], False),   # asked for the CPU
    (True, [], False),                    # no bf16, no tpu
])
def test_call_main_clears_tpu_only_for_cuda_bf16(monkeypatch, cuda, extra, cleared):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = _cfg(*extra)
    before = cfg.common.tpu
    seen = {}
    distributed_utils.call_main(cfg, lambda c: seen.update(tpu=c.common.tpu, dtpu=c.distributed_training.tpu))
    if cleared:
        assert before and seen == {"tpu": False, "dtpu": False}
    else:
        assert seen["tpu"] == before


def test_wrapper_installed_once():
    bf16_cuda._install()
    assert distributed_utils.call_main._gsgn_bf16_cuda
    assert not getattr(distributed_utils.call_main.__wrapped__, "_gsgn_bf16_cuda", False)
