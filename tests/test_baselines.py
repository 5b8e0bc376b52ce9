"""Baselines and HAF-VT's configurations: each learns order (deterministic next item -> HR@1 near 1, ties
against the target; a constant-score model fails the check), each baseline trains on the demo, and the
transition floor counts what it should."""
import numpy as np
import pytest
import torch

import hafvt.train as train_mod
from hafvt.config import load_config
from hafvt.data.batches import build_views
from hafvt.data.c2dsr import ItemTable, Scenario, Sequences, read_scenario, write_scenario
from hafvt.models import build_model
from helpers import REPO, assert_sane_run, tiny_demo, write_fixture_tables

CROSS_DOMAIN = ["tricdr", "mifn", "psjnet"]  # the cross-domain baselines the papers only quote
SEQUENTIAL = ["gru4rec", "sasrec", "srgnn", "c2dsr", *CROSS_DOMAIN]
# HAF-VT's configurations (hierarchical and merged, with and without the frozen tables)
HAFVT_CONFIGS = ["hafvt", "ifcdsr", "id-txt-hier", "id-merged", "id-img-merged", "id-txt-merged"]
EPOCHS = {"gru4rec": 20, "sasrec": 12, "srgnn": 25, "c2dsr": 12,  # enough for HR@1 = 1.0 on the chain
          "tricdr": 18, "mifn": 15, "psjnet": 15,  # the fewest that pass on seeds 0-2 (16, 13, 14 fail on some)
          "hafvt": 12, "ifcdsr": 25, "id-txt-hier": 12, "id-merged": 12, "id-img-merged": 12, "id-txt-merged": 20}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on a shared CPU: one intra-op thread is ~10x faster than two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
N_X, N_Y = 40, 60


def chain_split(rng, perm, n_lines, uid0):
    """Lines s, perm[s], perm[perm[s]], ... of length 6-15: the next item is a function of the previous."""
    lines = []
    for _ in range(n_lines):
        s, line = int(rng.integers(N_X + N_Y)), []
        for _ in range(int(rng.integers(6, 16))):
            line.append(s)
            s = int(perm[s])
        lines.append(line)
    uids = np.arange(uid0, uid0 + n_lines)
    return Sequences.from_lists(uids, uids, lines, [list(range(1, len(l) + 1)) for l in lines])


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    rng = np.random.default_rng(0)
    perm = rng.permutation(N_X + N_Y)
    items = lambda n, p: ItemTable([f"{p}{i}" for i in range(n)], [f"{p}{i}" for i in range(n)])  # noqa: E731
    scn = Scenario(items_x=items(N_X, "x"), items_y=items(N_Y, "y"), users=[(f"u{i}", i) for i in range(800)],
                   train=chain_split(rng, perm, 600, 0), valid=chain_split(rng, perm, 100, 600),
                   test=chain_split(rng, perm, 100, 700))
    out = write_scenario(scn, tmp_path_factory.mktemp("chain") / "scn")
    write_fixture_tables(out, N_X + N_Y)  # frozen image/text tables: random unit rows
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tiny_demo(tmp_path_factory.mktemp("demo"))


def cfg_of(name, **over):
    return load_config(REPO / "configs" / f"{name}.yaml", {"hidden": 32, "maxlen": 15, "n_neg": 39, **over})


def learn_chain(chain, out, name, epochs):
    """Train on the chain, scored with ties AGAINST the target: an all-equal score ranks last, not first."""
    cfg = cfg_of(name, epochs=epochs, eval_every=epochs, batch_size=128, lr=1e-2, dropout=0.0, l2=0.0, q=32, tie="against")
    return train_mod.run(chain, cfg, out, progress=False)


def check_learned(res):
    """The learning check: HR@1 >= 0.95 in each domain, full ranking, ties against the target."""
    assert res["tie"] == "against"
    for d in ("X", "Y"):
        m = res["metrics"]["full"][d]
        assert m["n"] > 0 and m["hr@1"] >= 0.95, (d, m)


@pytest.mark.parametrize("name", SEQUENTIAL + HAFVT_CONFIGS)
def test_learns_a_deterministic_next_item(chain, tmp_path, name):
    check_learned(learn_chain(chain, tmp_path / name, name, EPOCHS[name]))


@pytest.mark.parametrize("name", ["sasrec", "id-merged"])
def test_negative_control_a_constant_score_model_fails_the_learning_check(chain, tmp_path, monkeypatch, name):
    def constant(cfg, scn, tables=None):
        model = build_model(cfg, scn, tables)  # trains as usual; scores every item 0
        model.scores = lambda batch: torch.zeros(len(batch["target"]), scn.n_items, dtype=torch.float64)
        return model

    monkeypatch.setattr(train_mod, "build_model", constant)
    res = learn_chain(chain, tmp_path / name, name, 2)
    with pytest.raises(AssertionError):
        check_learned(res)
    assert all(res["metrics"]["full"][d]["hr@1"] == 0 for d in ("X", "Y"))
    # the C2DSR rule (ties to the target) would have passed it: rank 1 on every line
    assert (np.load(tmp_path / name / "test_ranks.npz")["full_target"] == 1).all()
    scn = read_scenario(chain)  # and the one-epoch sanity check refuses it too
    with pytest.raises(AssertionError):
        assert_sane_run(res, tmp_path / name, scn.n_x, scn.n_y)


@pytest.mark.parametrize("name", ["transitions", *SEQUENTIAL])
def test_each_baseline_config_trains_one_epoch_on_the_tiny_demo(demo, tmp_path, name):
    res = train_mod.run(demo, cfg_of(name, epochs=1, n_neg=99), tmp_path / name, progress=False)
    scn = read_scenario(demo)
    assert_sane_run(res, tmp_path / name, scn.n_x, scn.n_y, count_based=name == "transitions")
    assert res["provenance"]["data_kind"] == "demo"


def test_transitions_count_the_last_k_items_and_back_off_to_popularity(chain):
    scn = read_scenario(chain)
    model = build_model(cfg_of("transitions", transitions_k=1), scn)
    b = build_views(scn.test, scn.n_x, scn.n_items).index(torch.arange(20))
    s = model.scores(b)
    # the chain's successor of the last history item is the target: it has the largest count
    assert torch.equal(s.argmax(1), b["target"])
    pop = np.bincount(scn.train.items, minlength=scn.n_items)
    frac = (s - s.floor())[0].numpy()  # the popularity part orders items with equal counts
    assert np.all(frac < 1) and np.array_equal(np.argsort(-frac, kind="stable")[:5], np.argsort(-pop, kind="stable")[:5])


@pytest.fixture(scope="module")
def food_kitchen_derived(real_data_dir, tmp_path_factory):
    """FK-mini's derivation of the real Food-Kitchen files: train = 90% of the valid users."""
    from hafvt.cli import main as cli

    out = tmp_path_factory.mktemp("fk") / "fk"
    assert cli(["derive", str(real_data_dir), str(out), "--train-fraction", "0.9", "--seed", "0"]) == 0
    return out


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["c2dsr", *CROSS_DOMAIN])
def test_cross_domain_baselines_train_on_the_real_food_kitchen_files(food_kitchen_derived, tmp_path, name):
    """One short epoch (small states, last position only): the configs need nothing but the C2DSR files."""
    cfg = load_config(REPO / "configs" / f"{name}.yaml", ["epochs=1", "hidden=16", "n_blocks=1", "train_targets=last", "n_neg=99"])
    res = train_mod.run(food_kitchen_derived, cfg, tmp_path / name, progress=False)
    scn = read_scenario(food_kitchen_derived)
    # count_based=True skips only the no-tie check: over 29k-35k items, float32 scores of a one-epoch model
    # tie with the target by chance on a few lines (PSJNet: 23 of 8,406; SASRec at hidden 16: 5)
    assert_sane_run(res, tmp_path / name, scn.n_x, scn.n_y, count_based=True)
    z = np.load(tmp_path / name / "test_ranks.npz")
    assert (z["full_target"] != z["full_average"]).mean() < 0.01 and (z["sampled_target"] != z["sampled_average"]).mean() < 0.001
    assert res["provenance"]["data_kind"] == "derived" and res["provenance"]["derived_from"]["train_fraction"] == 0.9
