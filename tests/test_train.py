"""Training: every configuration runs, runs are deterministic on CPU, resume equals straight-through."""
import json

import pytest

import hafvt.train as train_mod
from hafvt.cli import main as cli
from hafvt.config import load_config
from hafvt.data.c2dsr import read_scenario
from helpers import REPO, assert_sane_run, interrupt_at, tiny_demo

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tiny_demo(tmp_path_factory.mktemp("demo"))


def small_cfg(name="hafvt", **over):
    return load_config(REPO / "configs" / f"{name}.yaml", {"epochs": 4, "eval_every": 2, "batch_size": 64, "q": 16, "hidden": 16, "n_neg": 99, **over})


@pytest.mark.parametrize("name", CONFIGS)
def test_each_config_trains_one_epoch_on_the_tiny_demo(demo, tmp_path, name):
    res = train_mod.run(demo, small_cfg(name, epochs=1), tmp_path / name, progress=False)
    scn = read_scenario(demo)
    assert_sane_run(res, tmp_path / name, scn.n_x, scn.n_y, count_based=name in ("popularity", "transitions"))
    assert res["provenance"]["data_kind"] == "demo" and not res["provenance"]["comparable_with_paper"]
    assert (tmp_path / name / "results.json").is_file() and (tmp_path / name / "test_ranks.npz").is_file()


def test_same_seed_gives_identical_metrics(demo, tmp_path):
    a = train_mod.run(demo, small_cfg(), tmp_path / "a", seed=3, progress=False)
    b = train_mod.run(demo, small_cfg(), tmp_path / "b", seed=3, progress=False)
    assert a["metrics"] == b["metrics"] and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]


def test_interrupted_run_resumes_to_the_same_metrics(demo, tmp_path, monkeypatch):
    straight = train_mod.run(demo, small_cfg(), tmp_path / "straight", progress=False)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(demo, small_cfg(), tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file() and not (tmp_path / "resumed" / "results.json").exists()
    monkeypatch.undo()
    resumed = train_mod.run(demo, small_cfg(), tmp_path / "resumed", progress=False)
    assert resumed["metrics"] == straight["metrics"]
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3, 4]


def test_checkpoint_of_another_config_is_refused(demo, tmp_path):
    train_mod.run(demo, small_cfg(epochs=2), tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_mod.run(demo, small_cfg(epochs=2, lr=5e-4), tmp_path / "run", progress=False)


def test_cli_train_writes_results_with_provenance(demo, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["train", str(demo), "--config", str(REPO / "configs" / "ifcdsr.yaml"), "--epochs", "1",
                "--set", "q=16", "--set", "n_neg=99", "--seed", "2", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    scn = read_scenario(demo)
    assert_sane_run(res, out, scn.n_x, scn.n_y)
    p = res["provenance"]
    assert p["seed"] == 2 and len(p["data_hash"]) == 64 and p["config_hash"] == load_config(
        REPO / "configs" / "ifcdsr.yaml", ["q=16", "n_neg=99", "epochs=1"]).hash()
    assert p["embeddings"]["model"] == "test-fixture" and "torch" in p["versions"] and p["device"].startswith("cpu")
    assert res["config"]["alpha"] == 0.7 and res["config"]["modalities"] == ["id", "img"]
    assert "commit" in p
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["config"] == "ifcdsr"


def test_scenario_without_train_split_says_how_to_derive(tmp_path):
    from hafvt.data.c2dsr import read_scenario, write_scenario

    d = tiny_demo(tmp_path)
    scn = read_scenario(d)
    scn.train = None
    write_scenario(scn, tmp_path / "notrain")
    with pytest.raises(FileNotFoundError, match="hafvt derive"):
        train_mod.run(tmp_path / "notrain", small_cfg("id-merged"), tmp_path / "r", progress=False)


def _touch(path):  # what a hostile checkpoint would run on load
    open(path, "w").close()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return _touch, (self.marker,)


def test_checkpoint_is_tensors_and_plain_types_and_a_pickled_object_is_refused(demo, tmp_path):
    import torch

    train_mod.run(demo, small_cfg(epochs=2), tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    saved = torch.load(ckpt, weights_only=True)  # loads without allowing any pickled class
    assert isinstance(saved["state"]["best"]["X"]["test_ranks"]["sampled/target"], torch.Tensor)
    marker = tmp_path / "code-ran"
    saved["state"]["extra"] = _Payload(str(marker))
    torch.save(saved, ckpt)
    with pytest.raises(ValueError, match=r"checkpoint\.pt.*refused"):
        train_mod.run(demo, small_cfg(epochs=2), tmp_path / "run", progress=False)
    assert not marker.exists()
    with pytest.raises(ValueError, match=str(ckpt)):
        train_mod.load_checkpoint(ckpt)


def test_rank_split_ranks_each_target_within_its_own_domain():
    import torch

    from hafvt.data.batches import build_views
    from hafvt.data.c2dsr import Sequences

    n_x, n_y = 4, 5
    lines = [[0, 2], [3, 1], [0, 6], [5, 8]]  # targets 2 (X), 1 (X), 6 (Y), 8 (Y)
    views = build_views(Sequences.from_lists([0, 1, 2, 3], [0, 1, 2, 3], lines, [[1, 2]] * 4), n_x, n_x + n_y, maxlen=3)
    # every item of the OTHER domain scores above the target: it must not count in the full rank
    P = torch.tensor([[0.9, 0.1, 0.5, 0.5, 5.0, 5.0, 5.0, 5.0, 5.0],   # target 2: one above, one tied
                      [0.2, 0.8, 0.3, 0.1, 9.0, 9.0, 9.0, 9.0, 9.0],   # target 1: top of X
                      [7.0, 7.0, 7.0, 7.0, 0.1, 0.6, 0.4, 0.6, 0.2],   # target 6: items 5 and 7 above
                      [3.0, 3.0, 3.0, 3.0, 0.5, 0.1, 0.2, 0.3, 0.05]],  # target 8: last of Y
                     dtype=torch.float64)
    row_of = {2: 0, 1: 1, 6: 2, 8: 3}

    class Fixed:
        def eval(self):
            return self

        def scores(self, batch):
            return P[[row_of[int(t)] for t in batch["target"]]]

    cands = torch.tensor([[2, 0, 3, 1, 1], [1, 0, 2, 3, 3], [6, 4, 5, 7, 8], [8, 4, 4, 5, 6]])
    r = train_mod.rank_split(Fixed(), views, cands, n_x, batch_size=3, ties=("target", "average", "against"))
    assert r[("full", "target")].tolist() == [2, 1, 3, 5]
    assert r[("full", "average")].tolist() == [2.5, 1, 3, 5]
    assert r[("full", "against")].tolist() == [3, 1, 3, 5]
    assert r[("sampled", "target")].tolist() == [2, 1, 3, 5]
    assert r[("sampled", "average")].tolist() == [2.5, 1, 3, 5]
    assert r[("sampled", "against")].tolist() == [3, 1, 3, 5]


def test_patience_stops_after_k_evaluations_without_improvement(tmp_path):
    """lr 0: the model never changes, so validation never improves after the first evaluation."""
    d = tiny_demo(tmp_path)
    cfg = load_config(REPO / "configs" / "id-merged.yaml", ["epochs=30", "eval_every=1", "patience=2", "lr=0.0", "q=16", "n_neg=19"])
    res = train_mod.run(d, cfg, tmp_path / "r", progress=False)
    assert res["stopped_early"] and res["last_epoch"] == 3 and res["selected_epoch"] == {"X": 1, "Y": 1}
    assert res["selected_at_last_epoch"] == {"X": False, "Y": False}
    assert [e["epoch"] for e in res["history"]] == [1, 2, 3]
    # without patience the same run trains every epoch; a run selected at its last epoch is flagged
    cfg = load_config(REPO / "configs" / "id-merged.yaml", ["epochs=2", "eval_every=1", "patience=0", "q=16", "n_neg=19", "lr=0.01"])
    res = train_mod.run(d, cfg, tmp_path / "r2", progress=False)
    assert not res["stopped_early"] and res["last_epoch"] == 2
    assert res["selected_at_last_epoch"] == {k: v == 2 for k, v in res["selected_epoch"].items()}
