"""Config.validate: eq. (7)'s modality weights must form a mixture (every weight > 0)."""
import pytest

from hafvt.config import load_config, modality_weights
from helpers import REPO


@pytest.mark.parametrize("over", [
    {"alpha": 0.8, "beta": 0.3},                                   # id, img, tex: text weight 1 - 0.8 - 0.3 = -0.1
    {"alpha": 0.5, "beta": -0.1},                                  # negative image weight
    {"alpha": -0.2, "beta": 0.2},                                  # negative id weight
    {"alpha": 0.8, "beta": 0.2},                                   # text weight 0 (log 0 in the loss)
    {"modalities": ["id", "img"], "alpha": 1.1},                   # IFCDSR: 1 - alpha < 0
    {"modalities": ["img", "tex"], "alpha": 1.2, "beta": 0.2},     # img/tex normalised by 1 - alpha < 0
    {"modalities": ["img", "tex"], "alpha": 1.0},                  # 1 - alpha = 0
])
def test_non_positive_modality_weights_are_rejected(over):
    with pytest.raises(ValueError, match="modality weights"):
        load_config(REPO / "configs" / "hafvt.yaml", over)


def test_valid_weights_pass_and_baselines_ignore_alpha():
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {"alpha": 0.5, "beta": 0.3})
    assert modality_weights(cfg) == pytest.approx({"id": 0.5, "img": 0.3, "tex": 0.2})
    assert modality_weights(load_config(REPO / "configs" / "ifcdsr.yaml")) == pytest.approx({"id": 0.7, "img": 0.3})
    assert modality_weights(load_config(REPO / "configs" / "id-merged.yaml", {"alpha": 2.0})) == {"id": 1.0}  # alpha unused
    load_config(REPO / "configs" / "sasrec.yaml", {"alpha": 0.8, "beta": 0.3})  # not a HAF-VT model: weights unused
    for p in sorted((REPO / "configs").glob("*.yaml")):
        load_config(p)  # every shipped config is valid
