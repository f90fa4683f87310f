"""Saving a folder (a checkpoint, a model) can be killed at any step: the next start finds the
newest complete version, and leftovers of interrupted saves are removed."""

from __future__ import annotations

import json
import os
import signal
import stat

import pytest
import torch
from test_trainer import Toy, make_trainer, scripted_eval

from textdistill.paths import new_dir_beside, recover_dir, replace_dir


def _version(folder, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "v.txt").write_text(text)
    return folder


def _left(tmp_path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


def test_replace_dir_swaps_and_leaves_only_the_folder(tmp_path):
    dest = _version(tmp_path / "ckpt", "1")
    new = _version(new_dir_beside(dest), "2")
    replace_dir(new, dest)
    assert (dest / "v.txt").read_text() == "2" and _left(tmp_path) == {"ckpt"}
    mode = stat.S_IMODE(os.stat(dest).st_mode)
    assert mode == 0o777 & ~_umask()  # not mkdtemp's private 0700


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(("state", "expect"), [
    # killed while writing the new version: the old one stays, the partial one goes
    ({"ckpt": "1", ".ckpt.tmpab12": "2-partial"}, "1"),
    # killed after the new version was complete (renamed .new), before the swap
    ({"ckpt": "1", ".ckpt.new": "2"}, "2"),
    # killed between the two renames: no ckpt/, the newest complete one is .new
    ({".ckpt.old": "1", ".ckpt.new": "2"}, "2"),
    # killed after the swap, before the old version was deleted
    ({"ckpt": "2", ".ckpt.old": "1"}, "2"),
    # a lone old version (no new one was complete) is put back
    ({".ckpt.old": "1"}, "1"),
])
def test_recover_dir_finds_the_newest_complete_version(tmp_path, state, expect):
    for name, text in state.items():
        _version(tmp_path / name, text)
    recover_dir(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "v.txt").read_text() == expect
    assert _left(tmp_path) == {"ckpt"}


def test_resume_after_a_kill_between_the_checkpoint_renames(tmp_path):
    """The probe that lost progress before: checkpoint/ renamed away, the new one not yet in
    place. --resume now finds the newest complete checkpoint and ends bit-identical."""
    torch.manual_seed(123)
    reference = Toy()
    init = {k: v.clone() for k, v in reference.state_dict().items()}
    make_trainer(tmp_path / "full", reference, scripted_eval([0.1, 0.2]), epochs=(2,)).train()

    module = Toy({6: signal.SIGINT})
    module.load_state_dict(init)
    cut = tmp_path / "cut"
    with pytest.raises(Exception, match="stopped by SIGINT"):
        make_trainer(cut, module, scripted_eval([0.1, 0.2]), epochs=(2,)).train()
    ckpt = cut / "checkpoint"
    (cut / ".model.tmpzz").mkdir()  # an interrupted model save
    ckpt.rename(cut / ".checkpoint.new")  # the state right after "checkpoint -> .old"
    assert json.loads((cut / ".checkpoint.new" / "state.json").read_text())["global_step"] == 6

    resumed = Toy()
    make_trainer(cut, resumed, scripted_eval([0.2]), epochs=(2,)).train(resume=True)
    assert resumed.calls == 2
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert not [p for p in cut.iterdir() if p.name.startswith(".")]


def test_replace_dir_finishes_an_earlier_interrupted_swap_first(tmp_path):
    _version(tmp_path / "ckpt", "1")
    _version(tmp_path / ".ckpt.new", "2")  # a complete version an earlier run left
    newest = _version(new_dir_beside(tmp_path / "ckpt"), "3")
    replace_dir(newest, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "v.txt").read_text() == "3" and _left(tmp_path) == {"ckpt"}
