"""``fairseq-train`` that also records, per rank, what tests/test_distributed.py compares.

Launch it like fairseq-train (``torchrun ... tests/rank_recording_train.py ARGS``): it calls
fairseq's own ``fairseq_cli.train.cli_main`` with the same arguments, after wrapping three
functions with recorders that only read. Each rank writes ``$RANK_RECORD_DIR/rank{RANK}.json``
after every update::

    {"draws":   [{"update": u, "epoch": e, "keys": [...], "branches": [...]}, ...],  # training draws
     "targets": [{"update": u, "target": [...], "cos": [...]}, ...],  # every Eq. 11 evaluation
     "state_sha256": "...",  # the model's state dict after the last update
     "units_provenance": {...}}  # the task's record of the model's units (None: unknown)

``keys`` are the utterance keys (63-bit ints) of the batch, in batch order.
"""
import hashlib
import json
import os
from pathlib import Path



from fairseq_cli import train as fairseq_train  # noqa: E402  (first: it sets up fairseq's log format)
import torch  # noqa: E402
from fairseq import trainer as fairseq_trainer  # noqa: E402

from gsgn_fairseq.modules import gate_targets, multiview_frontend  # noqa: E402

RECORD = {"draws": [], "targets": [], "state_sha256": None, "units_provenance": None}
CURRENT = {"update": None}


def state_sha256(model) -> str:
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write() -> None:
    out = Path(os.environ["RANK_RECORD_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps(RECORD))


def _install() -> None:
    train_step = fairseq_trainer.Trainer.train_step

    def recorded_train_step(self, samples, raise_oom=False):
        CURRENT["update"] = self.get_num_updates()
        out = train_step(self, samples, raise_oom)
        RECORD["state_sha256"] = state_sha256(self.model)
        RECORD["units_provenance"] = self.task.model_units_provenance[0]
        _write()
        return out

    fairseq_trainer.Trainer.train_step = recorded_train_step

    select = multiview_frontend.MultiviewFrontend.select_branches

    def recorded_select(self, bsz, device, force_branch=None, utt_keys=None):
        branch = select(self, bsz, device, force_branch, utt_keys)
        if self.training and force_branch is None and self.msd_enabled:
            RECORD["draws"].append({
                "update": CURRENT["update"], "epoch": self.branch_sampler.epoch,
                "keys": utt_keys.tolist() if utt_keys is not None else None, "branches": branch.tolist(),
            })
        return branch

    multiview_frontend.MultiviewFrontend.select_branches = recorded_select

    finite_target = gate_targets._finite_target

    def recorded_target(ab, aa, bb, max_target):
        target, cos, finite = finite_target(ab, aa, bb, max_target)
        RECORD["targets"].append({"update": CURRENT["update"], "target": target.reshape(-1).tolist(),
                                  "cos": cos.reshape(-1).tolist()})
        return target, cos, finite

    gate_targets._finite_target = recorded_target

    finite_views_target = gate_targets._finite_views_target

    def recorded_views_target(abs_, aa, bbs, max_target):
        out = finite_views_target(abs_, aa, bbs, max_target)
        if len(abs_) > 1:  # one view goes through _finite_target, recorded above
            target, cos, _ = out
            RECORD["targets"].append({"update": CURRENT["update"], "target": target.reshape(-1).tolist(),
                                      "cos": cos.reshape(-1).tolist()})
        return out

    gate_targets._finite_views_target = recorded_views_target


if __name__ == "__main__":
    torch.set_num_threads(1)
    _install()
    fairseq_train.cli_main()
