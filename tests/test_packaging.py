"""pyproject.toml and environment.yml list the same dependencies."""
import tomllib

import yaml

from helpers import REPO


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p.replace(" ", "") for p in pip if not p.startswith("-e")}
    assert listed == {w.replace(" ", "") for w in wanted}


def test_torch_range_admits_local_and_gpu_versions():
    from packaging.specifiers import SpecifierSet

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = {d.split(">")[0].split("<")[0].split("=")[0]: SpecifierSet(d[len(d.split(">")[0].split("<")[0].split("=")[0]):]) for d in deps}
    for version in ("2.14.1", "2.11.0"):
        assert version in spec["torch"]
    for version in ("0.29.1", "0.26.0"):
        assert version in spec["torchvision"]
    jb = [d for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["book"] if d.startswith("jupyter-book")]
    assert jb == ["jupyter-book<2"]
