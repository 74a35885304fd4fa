"""Multi-stage dropout sampler (Eq. 13) and its epoch schedule."""
import pytest
import torch

from gsgn_fairseq.modules.branch_sampler import (
    DEFAULT_MSD_SCHEDULE,
    FBANK,
    FUSION,
    UNIT,
    BranchSampler,
    MsdStage,
    parse_msd_schedule,
    sample_branches,
    stage_for_epoch,
)

N = 100_000


def _shares(branch: torch.Tensor):
    counts = torch.bincount(branch, minlength=3).double() / branch.numel()
    return counts.tolist()


@pytest.mark.parametrize("delta_fbank,delta_unit", [(0.3, 0.0), (0.5, 0.3), (0.2, 0.45)])
def test_frequencies_match_thresholds(delta_fbank, delta_unit):
    g = torch.Generator().manual_seed(123)
    branch = sample_branches(N, delta_fbank, delta_unit, generator=g)
    assert branch.shape == (N,) and branch.dtype == torch.long
    fbank, unit, fusion = _shares(branch)
    assert abs(fbank - delta_fbank) < 0.01
    assert abs(unit - delta_unit) < 0.01
    assert abs(fusion - (1 - delta_fbank - delta_unit)) < 0.01


def test_boundaries():
    assert torch.all(sample_branches(1000, 1.0, 0.0) == FBANK)
    assert torch.all(sample_branches(1000, 0.0, 1.0) == UNIT)
    assert torch.all(sample_branches(1000, 0.0, 0.0) == FUSION)
    both = sample_branches(10_000, 0.5, 0.5)
    assert not torch.any(both == FUSION) and torch.any(both == FBANK) and torch.any(both == UNIT)
    assert sample_branches(0, 0.3, 0.3).shape == (0,)


def test_threshold_comparisons_follow_eq13(monkeypatch):
    # p < df -> fbank; df <= p < df + du -> unit; else fusion (p exactly on a threshold)
    p = torch.tensor([0.0, 0.29, 0.3, 0.49, 0.5, 0.99], dtype=torch.float64)
    monkeypatch.setattr(torch, "rand", lambda *a, **k: p.clone())
    assert sample_branches(6, 0.3, 0.2).tolist() == [FBANK, FBANK, UNIT, UNIT, FUSION, FUSION]


def test_generator_reproducible():
    a = sample_branches(50, 0.3, 0.3, generator=torch.Generator().manual_seed(7))
    b = sample_branches(50, 0.3, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("df,du", [(-0.1, 0.0), (0.0, 1.5), (0.6, 0.5)])
def test_bad_deltas(df, du):
    with pytest.raises(ValueError, match=str(du) if du > 1 else "delta"):
        sample_branches(4, df, du)


def test_parse_default_schedule():
    stages = parse_msd_schedule(DEFAULT_MSD_SCHEDULE)
    assert stages == [MsdStage(1, 0.3, 0.0), MsdStage(10, 0.5, 0.3), MsdStage(25, 0.3, 0.0)]


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("", "empty"),
        ("2:0.3,0.0", "epoch 1"),
        ("1:0.3,0.0;10:0.5,0.3;5:0.3,0.0", "increase"),
        ("1:0.3,0.0;1:0.5,0.3", "increase"),
        ("1:1.2,0.0", "delta_fbank"),
        ("1:0.3,-0.1", "delta_unit"),
        ("1:0.7,0.4", "<= 1"),
        ("1:0.3", "cannot parse"),
        ("one:0.3,0.1", "cannot parse"),
    ],
)
def test_schedule_errors_name_the_flag(spec, fragment):
    with pytest.raises(ValueError) as err:
        parse_msd_schedule(spec)
    assert "--msd-schedule" in str(err.value) and fragment in str(err.value)


def test_stage_by_epoch():
    stages = parse_msd_schedule(DEFAULT_MSD_SCHEDULE)
    expected = {1: 0, 9: 0, 10: 1, 24: 1, 25: 2, 100: 2}
    for epoch, index in expected.items():
        assert stage_for_epoch(stages, epoch)[0] == index, epoch
    with pytest.raises(ValueError, match="from 1"):
        stage_for_epoch(stages, 0)


def test_sampler_set_epoch_and_granularity():
    sampler = BranchSampler("1:1.0,0.0;3:0.0,1.0")
    assert torch.all(sampler.sample(8) == FBANK)
    assert sampler.set_epoch(2) is False
    assert sampler.set_epoch(3) is True and sampler.stage_index == 1
    assert torch.all(sampler.sample(8) == UNIT)
    assert "stage 2/2" in sampler.describe()
    assert torch.all(sampler.sample(8, stage=sampler.stages[0]) == FBANK)

    batch = BranchSampler("1:0.4,0.3", granularity="batch")
    torch.manual_seed(0)
    draws = [batch.sample(16) for _ in range(200)]
    assert all(torch.all(d == d[0]) for d in draws)
    shares = _shares(torch.stack([d[0] for d in draws]))
    assert shares[0] > 0.2 and shares[1] > 0.15 and shares[2] > 0.15
    with pytest.raises(ValueError, match="--msd-granularity"):
        BranchSampler(granularity="token")


def test_keyed_draws_are_uniform_and_depend_on_seed_and_key_only():
    from gsgn_fairseq.modules.branch_sampler import BranchSampler
    from gsgn_fairseq.modules.keyed_random import keyed_uniform, utterance_key

    keys = torch.tensor([utterance_key(f"ted_{i}_{j}") for i in range(200) for j in range(100)])
    p = keyed_uniform(keys, seed=1)
    assert p.dtype == torch.float64 and bool(((p >= 0) & (p < 1)).all())
    for q in (0.1, 0.3, 0.5, 0.9):  # 20,000 draws: 4 sd of a binomial share is < 0.015
        assert abs(float((p < q).double().mean()) - q) < 0.015
    assert torch.equal(keyed_uniform(keys.flip(0), 1), p.flip(0))  # order does not matter
    assert torch.equal(keyed_uniform(keys[:5], 1), p[:5])  # nor the batch
    assert not torch.equal(keyed_uniform(keys, 2), p)
    assert utterance_key("ted_1_0") == utterance_key("ted_1_0") != utterance_key("ted_1_1")
    sampler = BranchSampler("1:0.0,0.0;2:0.3,0.2", granularity="batch")  # inference ignores the granularity
    branch = sampler.sample_keyed(keys, seed=1)
    shares = [float((branch == b).double().mean()) for b in (FBANK, UNIT, FUSION)]
    assert abs(shares[0] - 0.3) < 0.015 and abs(shares[1] - 0.2) < 0.015 and abs(shares[2] - 0.5) < 0.015


def test_training_draws_depend_on_seed_epoch_and_key_not_on_the_batch():
    from gsgn_fairseq.modules.keyed_random import utterance_key

    keys = torch.tensor([utterance_key(f"train_{i}") for i in range(4000)])
    sampler = BranchSampler("1:0.3,0.2")
    whole = sampler.sample_training(len(keys), keys, seed=1, update=0)
    # any split of the batch (data-parallel ranks, micro-batches), order or update: the same draws
    halves = torch.cat([sampler.sample_training(2000, keys[:2000], 1, update=5),
                        sampler.sample_training(2000, keys[2000:], 1, update=9)])
    assert torch.equal(halves, whole)
    perm = torch.randperm(len(keys))
    assert torch.equal(sampler.sample_training(len(keys), keys[perm], 1, update=0), whole[perm])
    shares = _shares(whole)
    assert abs(shares[0] - 0.3) < 0.03 and abs(shares[1] - 0.2) < 0.03
    # a fresh draw every epoch and seed, and never the inference draw of the same utterance
    sampler.set_epoch(2)
    assert (sampler.sample_training(len(keys), keys, 1, 0) != whole).float().mean() > 0.4
    sampler.set_epoch(1)
    assert (sampler.sample_training(len(keys), keys, 2, 0) != whole).float().mean() > 0.4
    inference = BranchSampler("1:0.3,0.2").sample_keyed(keys, seed=1)
    assert (inference != whole).float().mean() > 0.4
    with pytest.raises(ValueError, match="utt_keys"):
        sampler.sample_training(4, None, 1, 0)


def test_batch_training_draws_are_one_per_update():
    sampler = BranchSampler("1:0.4,0.3", granularity="batch")
    draws = [sampler.sample_training(6, None, seed=1, update=u) for u in range(300)]
    assert all(torch.all(d == d[0]) for d in draws)
    # every rank and micro-batch of an update: the same branch, whatever its size and keys
    assert all(torch.equal(sampler.sample_training(3, torch.arange(3), 1, u), d[:3]) for u, d in enumerate(draws))
    shares = _shares(torch.stack([d[0] for d in draws]))
    assert abs(shares[0] - 0.4) < 0.1 and abs(shares[1] - 0.3) < 0.1
    assert any(not torch.equal(sampler.sample_training(6, None, 2, u), d) for u, d in enumerate(draws))
