"""The demo scenario generator (hafvt.data.demo): determinism, format, catalogue, planted signal."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hafvt.data.c2dsr import read_scenario
from hafvt.data.demo import (COLOURS, SIZES, build, cold_targets, generate, load_latents, planted_signal, rare_items,
                             write_demo)


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_demo(tmp_path_factory.mktemp("demo") / "tiny", "tiny", seed=0)


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = _hashes(write_demo(tmp_path / "again", "tiny", seed=0))
    assert again == _hashes(tiny)
    assert len(again) > SIZES["tiny"]["n_x"] + SIZES["tiny"]["n_y"]  # the images are hashed too
    other = _hashes(write_demo(tmp_path / "other", "tiny", seed=1))
    assert other.keys() == again.keys()
    assert other["validdata_new.txt"] != again["validdata_new.txt"] and other["images/0.png"] != again["images/0.png"]


def test_rewrite_in_place_is_identical(tiny):
    before = _hashes(tiny)
    write_demo(tiny, "tiny", seed=0)
    assert _hashes(tiny) == before


def test_read_back_equals_generated(tiny):
    scn, rows = generate("tiny", seed=0)
    back = read_scenario(tiny)
    assert back.equals(scn)
    sz = SIZES["tiny"]
    assert (back.n_x, back.n_y, len(back.train)) == (sz["n_x"], sz["n_y"], sz["train"])
    assert len(rows) == back.n_items


def test_files_keep_shuffled_lines_and_ties(tiny):
    """About half of the lines are not in time order on disk; some items share a day."""
    lines = (tiny / "traindata_new.txt").read_text().splitlines()
    ts = [[int(tok.split("|")[1]) for tok in line.split("\t")[2:]] for line in lines]
    unsorted = np.mean([t != sorted(t) for t in ts])
    assert 0.3 < unsorted < 0.7
    assert np.mean([len(set(t)) < len(t) for t in ts]) > 0.3


def test_sequences_users_and_targets(tiny):
    scn = read_scenario(tiny)
    for split in ("valid", "test"):
        seqs = scn.split(split)
        assert seqs.lengths.min() >= 6 and seqs.lengths.max() <= 15
        dom = np.bincount(seqs.target_domains(scn.n_x), minlength=2)
        assert tuple(dom) == (SIZES["tiny"][f"{split}_x"], SIZES["tiny"][f"{split}_y"])
        assert (seqs.uid >= 0).all() and (seqs.uid < len(scn.users)).all()
    assert not set(scn.valid.uid) & set(scn.test.uid)
    assert [u for _, u in scn.users] == list(range(len(scn.users)))
    ts = scn.test.ts
    assert (ts % 86400 == 0).all()


def test_catalogue_rows_and_images(tiny):
    scn = read_scenario(tiny)
    rows = [json.loads(line) for line in (tiny / "catalogue.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == scn.n_x + scn.n_y
    assert [r["item"] for r in rows] == list(range(scn.n_items))
    assert {r["domain"] for r in rows[: scn.n_x]} == {"X"} and {r["domain"] for r in rows[scn.n_x :]} == {"Y"}
    assert [r["asin"] for r in rows] == scn.items_x.asin + scn.items_y.asin
    for r in rows:
        assert r["image"] == f"images/{r['item']}.png" and r["title"]
        with Image.open(tiny / r["image"]) as im:
            im.load()
            assert im.size == (64, 64)
    info = json.loads((tiny / "demo.json").read_text())
    assert info["size"] == "tiny" and info["seed"] == 0 and "not comparable" in info["note"]


def test_images_and_titles_follow_latents(tiny):
    """An image's hue is its latent colour; a title mostly carries its cluster's words."""
    lat = load_latents(tiny)
    palette = np.array(list(COLOURS.values()), float)
    palette_chroma = palette / palette.sum(1, keepdims=True)
    hits = 0
    for i in range(len(lat["cluster"])):
        img = np.asarray(Image.open(tiny / f"images/{i}.png").convert("RGB"), float)
        fg = img[np.abs(img - img[0, 0]).sum(axis=2) > 60]  # the shape: pixels unlike the corner's background
        chroma = (fg / fg.sum(1, keepdims=True)).mean(0)
        hits += int(np.argmin(((palette_chroma - chroma) ** 2).sum(1)) == lat["colour"][i])
    assert hits / len(lat["cluster"]) > 0.85
    demo = build("tiny", 0)
    words = {c["cluster"]: set(c["words"]) for c in demo.info["latent"]["clusters"]}
    own = np.mean([bool(words[c] & set(r["title"].split())) for c, r in zip(lat["cluster"], demo.catalogue)])
    assert own > 0.85


def test_planted_signal_and_rare_items(tiny):
    scn = read_scenario(tiny)
    lat = load_latents(tiny)
    sig = planted_signal(scn, lat["cluster"], splits=("train", "valid", "test"))
    assert sig["lines"] == len(scn.train) + len(scn.valid) + len(scn.test)
    assert sig["history"] > 3 * sig["chance"] and sig["history"] > 2 * sig["majority_class"]
    assert sig["last_item"] > 3 * sig["chance"]
    rare = rare_items(scn)
    assert rare["share"] >= 0.3
    counts = np.bincount(scn.train.items, minlength=scn.n_items)
    assert np.sort(counts)[-1] > 20 * np.median(counts)  # a popular head and a long tail


def test_no_images_option(tmp_path):
    out = write_demo(tmp_path / "noimg", "tiny", seed=0, images=False)
    assert not (out / "images").exists()
    rows = [json.loads(line) for line in (out / "catalogue.jsonl").read_text().splitlines()]
    assert all(r["image"] is None for r in rows)
    assert json.loads((out / "demo.json").read_text())["images"] is False


def test_unknown_size():
    with pytest.raises(ValueError, match="tiny"):
        generate("huge")


# --------------------------------------------------------------------------- new items, cold targets


def test_new_items_only_in_valid_and_test():
    """New items never occur in train lines, do occur as valid/test targets, and leave every
    (domain, taste) group an item that training can draw."""
    demo = build("tiny", 0)
    scn, lat = demo.scenario, demo.latents
    new = lat["new"].astype(bool)
    assert 0.15 < new.mean() < 0.45
    assert not new[scn.train.items].any()
    assert new[scn.test.targets].mean() > 0.2 and new[scn.valid.targets].mean() > 0.2
    groups = lat["domain"] * (lat["cluster"].max() + 1) + lat["cluster"]
    assert set(groups[~new]) == set(groups)
    cold = cold_targets(scn, "test")
    for d in "XY":
        assert sum(cold[d]["buckets"].values()) == cold[d]["lines"] == SIZES["tiny"][f"test_{d.lower()}"]
        # an unseen target is a new item or an old one that happens to miss train
        targets = scn.test.targets[(scn.test.targets >= scn.n_x) == (d == "Y")]
        assert cold[d]["unseen"] >= new[targets].mean() > 0
    assert build("tiny", 0).info["cold_targets"] == demo.info["cold_targets"]


def test_small_size_has_thousands_of_test_lines_and_cold_targets():
    """The book's demo: >= 1,000 valid/test lines per target domain, 30-60% of test targets unseen in
    train, and every cold-item bucket holds enough lines for an interval (without rendering images)."""
    sz = SIZES["small"]
    assert min(sz["valid_x"], sz["valid_y"], sz["test_x"], sz["test_y"]) >= 1000
    demo = build("small", 0)
    assert len(demo.scenario.train) == sz["train"]
    for split in ("valid", "test"):
        for d in "XY":
            c = demo.info["cold_targets"][split][d]
            assert c["lines"] >= 1000
            assert 0.3 <= c["unseen"] <= 0.6, (split, d, c)
            assert min(c["buckets"].values()) >= 60, (split, d, c)
    assert demo.info["signal"]["test"]["history"] > 3 * demo.info["signal"]["test"]["chance"]


# --------------------------------------------------------------------------- oracle embeddings


def test_oracle_cache_loads_by_name_and_follows_the_latents(tmp_path):
    from hafvt.embed.cache import list_caches, load_embeddings
    from hafvt.embed.oracle import LABEL, ORACLE_MODEL, write_oracle_cache
    from helpers import write_fixture_tables

    out = write_demo(tmp_path / "tiny", "tiny", seed=0, images=False)
    write_fixture_tables(out, SIZES["tiny"]["n_x"] + SIZES["tiny"]["n_y"])  # a second cache beside it
    write_oracle_cache(out)
    assert list_caches(out) == ["demo-oracle", "test-fixture"]
    emb = load_embeddings(out, "demo-oracle")
    assert emb.manifest["model"] == ORACLE_MODEL and emb.manifest["label"] == LABEL
    lat = load_latents(out)
    n = len(lat["cluster"])
    same = lat["cluster"][:, None] == lat["cluster"][None, :]
    off = ~np.eye(n, dtype=bool)
    for table in (emb.image, emb.text):
        assert table.shape == (n, emb.dim) and table.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-6)
        sim = table @ table.T
        assert sim[same & off].mean() > sim[~same].mean() + 0.2
    # the image rows carry the look: same colour, shape and texture -> same row
    look = np.stack([lat["colour"], lat["shape"], lat["texture"], lat["domain"]], 1)
    i, j = next((a, b) for a in range(n) for b in range(a + 1, n) if (look[a] == look[b]).all())
    np.testing.assert_array_equal(emb.image[i], emb.image[j])
    assert (emb.image_source == 0).all() and (emb.text_source == 0).all()


def test_oracle_cli_and_non_demo_scenario(tmp_path, capsys):
    from hafvt.cli import main as cli
    from hafvt.embed.oracle import write_oracle_cache

    out = write_demo(tmp_path / "tiny", "tiny", seed=0, images=False)
    assert cli(["demo-oracle", str(out)]) == 0
    assert "embeddings=demo-oracle" in capsys.readouterr().out
    cache = out / "embeddings" / "demo-oracle"
    before = _hashes(cache)
    assert "manifest.json" in before and "image.npy" in before
    write_oracle_cache(out)
    assert _hashes(cache) == before  # deterministic: same latents, same bytes
    (out / "latent.json").unlink()
    with pytest.raises(FileNotFoundError, match="latent.json"):
        write_oracle_cache(out)


def test_training_reads_the_oracle_cache_by_name(tmp_path):
    import hafvt.train as train_mod
    from hafvt.config import load_config
    from hafvt.embed.oracle import write_oracle_cache
    from helpers import REPO, tiny_demo

    out = tiny_demo(tmp_path)  # holds the test-fixture cache too
    write_oracle_cache(out)
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {"epochs": 1, "batch_size": 64, "q": 16, "n_neg": 99,
                                                        "embeddings": "demo-oracle"})
    res = train_mod.run(out, cfg, tmp_path / "run", progress=False)
    assert res["provenance"]["embeddings"]["model"] == "demo-oracle"
    assert res["provenance"]["embeddings"]["oracle"] is True
    assert all(0 < res["metrics"]["sampled"][d]["mrr"] <= 1 for d in "XY")
