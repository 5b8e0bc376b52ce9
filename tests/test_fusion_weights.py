"""Re-mixing a trained HAF-VT with other fusion weights (hafvt.fusion_weights): at the run's weights it gives
the run's own metrics exactly; other weights change them as eqs. (7) and (10) say."""
import numpy as np
import pytest
import torch

import hafvt.train as train_mod
from hafvt.config import load_config
from hafvt.fusion_weights import checkpoint_metrics, remix_metrics, remix_scores, target_ranks, weight_grid
from hafvt.widgets import Explorer
from helpers import REPO, tiny_demo


@pytest.fixture(scope="module")
def hafvt_run(tmp_path_factory):
    torch.set_num_threads(1)
    d = tiny_demo(tmp_path_factory.mktemp("fw"))
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {"epochs": 2, "eval_every": 1, "patience": 0, "hidden": 32, "q": 32,
                                                         "maxlen": 15, "n_neg": 99})
    out = tmp_path_factory.mktemp("fw-run") / "hafvt"
    res = train_mod.run(d, cfg, out, progress=False)
    return d, out, res


def test_remix_at_the_runs_weights_reproduces_its_metrics_exactly(hafvt_run):
    d, out, res = hafvt_run
    parts = Explorer(d, out).candidate_parts()
    assert parts.epoch == res["last_epoch"] == 2
    assert parts.acting() == ["alpha", "beta", "lambda1", "lambda2"]
    assert remix_metrics(parts) == checkpoint_metrics(out, parts.epoch)
    # where a domain selected the checkpoint's epoch, its ranks are the saved per-line ranks, line by line
    z = np.load(out / "test_ranks.npz")
    ranks = target_ranks(parts).numpy()
    same_epoch = [d for d in ("X", "Y") if res["selected_epoch"][d] == parts.epoch]
    assert same_epoch  # the tiny run still improves at epoch 2 in at least one domain
    for d_name, code in (("X", 0), ("Y", 1)):
        if d_name in same_epoch:
            keep = z["domain"] == code
            np.testing.assert_array_equal(ranks[keep], z[f"sampled_{res['tie']}"][keep])


def test_other_weights_follow_eqs_7_and_10(hafvt_run):
    d, out, _ = hafvt_run
    parts = Explorer(d, out).candidate_parts()
    # alpha = 1, beta = 0: only the ID modality; lambda1 = lambda2 = 0: only the target's own view
    s = remix_scores(parts, alpha=1.0, beta=0.0, lambda1=0.0, lambda2=0.0)
    own = torch.where(parts.domain[:, None] == 0, parts.probs[("x", "id")], parts.probs[("y", "id")])
    torch.testing.assert_close(s, own, rtol=0, atol=0)
    assert remix_metrics(parts, alpha=1.0, beta=0.0) != remix_metrics(parts)
    grid = weight_grid(parts, "alpha", "beta", [0.2, 0.6, 1.0], [0.0, 0.2])
    assert np.isnan(grid["X"][1, 2]) and np.isfinite(grid["X"][0, 2])  # alpha + beta > 1 is no mixture
    assert grid["Y"][1, 1] == remix_metrics(parts, alpha=0.6, beta=0.2)["Y"]["mrr"]
    with pytest.raises(ValueError, match="gamma"):
        remix_scores(parts, gamma=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        remix_scores(parts, lambda1=-0.1)


def test_only_hafvt_runs_have_fusion_weights(tmp_path):
    d = tiny_demo(tmp_path)
    cfg = load_config(REPO / "configs" / "sasrec.yaml", {"epochs": 1, "hidden": 16, "maxlen": 15, "n_neg": 99})
    train_mod.run(d, cfg, tmp_path / "sasrec", progress=False)
    with pytest.raises(ValueError, match="sasrec"):
        Explorer(d, tmp_path / "sasrec").candidate_parts()
