"""open_clip embeddings: cache + manifest, fallbacks, resume, the checkpoint route, offline
failure, the demo encoder, and two gloo processes under torchrun. Tiny models, 32-px images."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from hafvt.data.catalogue import write_catalogue
from hafvt.embed.cache import default_cache_name, load_embeddings
from hafvt.embed.clip import embed_scenario, encode_images, load_encoder, resolve_pretrained
from hafvt.embed.demo_encoder import register_config, save_checkpoint, tiny_config, train_demo_encoder

TINY = "hafvt-test-tiny"
CFG = tiny_config(image_size=32, patch_size=16, width=32, layers=1, embed_dim=32, context_length=16)
register_config(TINY, CFG)
COLORS = [(220, 30, 30), (30, 180, 40), (30, 60, 220), (230, 220, 30)]


def make_scenario(root, n=14):
    """n items (half X, half Y) with small PNGs and titles; a few gaps to exercise every fallback."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        im = Image.new("RGB", (40, 30), (240, 240, 240))
        ImageDraw.Draw(im).ellipse((5, 5, 5 + 3 * i % 30, 25), fill=COLORS[i % 4])
        im.save(root / "images" / f"{i}.png")
        rows.append({"item": i, "domain": "X" if i < n // 2 else "Y", "asin": f"A{i}",
                     "title": f"{['red', 'green', 'blue', 'yellow'][i % 4]} thing {i}", "image": f"images/{i}.png"})
    rows[1]["image"] = None  # no image -> its title text in the image table
    (root / "images" / "2.png").write_bytes(b"not a png")  # broken image -> the same
    rows[3].update(image=None, title=None)  # neither -> domain mean (image), domain mean (text)
    rows[9]["title"] = None  # no title -> its image in the text table
    write_catalogue(root, rows)
    return rows


OPTS = dict(device="cpu", batch_size=4, workers=0, shard_size=4)


def test_cache_manifest_and_fallbacks(tmp_path):
    make_scenario(tmp_path)
    out = embed_scenario(tmp_path, TINY, "random-init", **{**OPTS, "workers": 2})
    assert out.name == default_cache_name(TINY, "random-init") == "hafvt-test-tiny__random-init"
    t = load_embeddings(tmp_path)
    assert t.image.shape == t.text.shape == (14, 32) and t.image.dtype == np.float32
    assert np.allclose(np.linalg.norm(t.image, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(t.text, axis=1), 1, atol=1e-5)
    assert list(np.nonzero(t.image_source)[0]) == [1, 2, 3] and list(t.image_source[[1, 2, 3]]) == [1, 1, 2]
    assert np.array_equal(t.image[1], t.text[1]) and np.array_equal(t.image[2], t.text[2])
    assert list(np.nonzero(t.text_source)[0]) == [3, 9] and np.array_equal(t.text[9], t.image[9])
    m = t.manifest
    assert m["model"] == TINY and m["pretrained"] == "random-init" and m["random_init"] and m["seed"] == 0
    assert m["fallback"]["image"] == {"image": 11, "title_text": 2, "domain_mean": 1}
    assert m["fallback"]["text"] == {"title": 12, "image": 1, "domain_mean": 1}
    assert len(m["item_list_sha256"]) == 64 and m["n_x"] == m["n_y"] == 7 and m["dtype"] == "float32"
    assert {"open_clip", "torch", "numpy", "pillow"} <= set(m["versions"]) and "Normalize" in m["preprocessing"]["image"]
    # a second call finds it complete; other settings need --overwrite
    assert embed_scenario(tmp_path, TINY, "random-init", **OPTS) == out
    with pytest.raises(ValueError, match="other settings"):
        embed_scenario(tmp_path, TINY, "random-init", **{**OPTS, "shard_size": 5})
    with pytest.raises(FileNotFoundError, match="no embedding cache|not found"):
        load_embeddings(tmp_path, "nope")


def test_images_only_and_titles_only(tmp_path):
    make_scenario(tmp_path)
    embed_scenario(tmp_path, TINY, "random-init", titles=False, name="img", **OPTS)
    embed_scenario(tmp_path, TINY, "random-init", images=False, name="txt", **OPTS)
    img, txt = load_embeddings(tmp_path, "img"), load_embeddings(tmp_path, "txt")
    assert img.text is None and img.manifest["tables"] == ["image"]
    assert txt.image is None and list(np.nonzero(txt.text_source)[0]) == [3, 9]
    assert np.array_equal(img.image[1], txt.text[1])  # the title fallback still works without a text table
    with pytest.raises(ValueError, match="several embedding caches"):
        load_embeddings(tmp_path)


def test_interrupted_run_resumes_to_the_same_cache(tmp_path):
    make_scenario(tmp_path)
    full = load_embeddings(tmp_path, embed_scenario(tmp_path, TINY, "random-init", name="full", **OPTS).name)
    done = []

    def stop_after_two(k):
        done.append(k)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_scenario(tmp_path, TINY, "random-init", name="resumed", on_shard=stop_after_two, **OPTS)
    part = tmp_path / "embeddings" / "resumed"
    assert not (part / "manifest.json").exists() and len(list((part / "shards").glob("shard_*.npz"))) == 2
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_embeddings(tmp_path, "resumed")
    again = []
    embed_scenario(tmp_path, TINY, "random-init", name="resumed", on_shard=again.append, **OPTS)
    assert again == [2, 3]  # only the shards that were missing
    res = load_embeddings(tmp_path, "resumed")
    for f in ("image", "text", "image_source", "text_source"):
        assert np.array_equal(getattr(res, f), getattr(full, f))
    assert not (part / "shards").exists()


def test_checkpoint_route_gives_identical_embeddings(tmp_path):
    import open_clip

    make_scenario(tmp_path)
    enc = load_encoder(TINY, "random-init")
    ckpt = save_checkpoint(enc.model, CFG, tmp_path / "weights", "hafvt-test-saved")
    open_clip.factory._MODEL_CONFIGS.pop("hafvt-test-saved", None)  # as in a fresh process: config read from the JSON
    a = load_embeddings(tmp_path, embed_scenario(tmp_path, TINY, "random-init", **OPTS).name)
    b = load_embeddings(tmp_path, embed_scenario(tmp_path, "hafvt-test-saved", str(ckpt), **OPTS).name)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.text, b.text)
    assert b.manifest["pretrained_kind"] == "file" and len(b.manifest["weights_sha256"]) == 64
    assert not b.manifest["random_init"]
    assert not b.manifest["weights_file"].startswith("/") and b.manifest["weights_file"].endswith("hafvt-test-saved.pt")


def test_absent_pretrained_weights_fail_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="never downloads") as e:
        resolve_pretrained("ViT-B-32", "openai", cache_dir=str(tmp_path / "clip"))
    assert time.time() - t0 < 5
    assert "--pretrained /path/to/checkpoint" in str(e.value) and "ViT-B-32.pt" in str(e.value)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-B-32.pt").write_bytes(b"")  # once the file is where the message said, it is found
    found = resolve_pretrained("ViT-B-32", "openai", cache_dir=str(tmp_path / "clip"))
    assert found["kind"] == "tag" and found["path"] == tmp_path / "clip" / "ViT-B-32.pt"
    with pytest.raises(FileNotFoundError, match="neither a file nor a pretrained tag"):
        resolve_pretrained("ViT-B-32", "no-such-tag")
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        resolve_pretrained("ViT-B-32", str(tmp_path / "missing.pt"))


def test_demo_encoder_then_torchrun_two_gloo_processes(tmp_path):
    make_scenario(tmp_path, n=16)
    ckpt = train_demo_encoder(tmp_path, out_dir=tmp_path / "enc", name="hafvt-test-demo", cfg=CFG, epochs=2,
                              batch_size=8)
    assert ckpt.is_file() and (ckpt.parent / "hafvt-test-demo.json").is_file()
    one = load_embeddings(tmp_path, embed_scenario(tmp_path, "hafvt-test-demo", str(ckpt), name="one", **OPTS).name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hafvt.cli", "embed", str(tmp_path), "--model", "hafvt-test-demo",
           "--pretrained", str(ckpt), "--name", "two", "--device", "cpu", "--batch-size", "4",
           "--workers", "0", "--shard-size", "3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_embeddings(tmp_path, "two")
    assert two.manifest["compute"]["world_size"] == 2
    np.testing.assert_allclose(two.image, one.image, atol=1e-6)
    np.testing.assert_allclose(two.text, one.text, atol=1e-6)
    assert np.array_equal(two.image_source, one.image_source)


def test_cli_embed_without_weights_exits_2(tmp_path, capsys):
    from hafvt.cli import main

    make_scenario(tmp_path)
    args = ["embed", str(tmp_path), "--model", "ViT-B-32", "--pretrained", "openai", "--weights-dir", str(tmp_path / "w")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and "ViT-B-32.pt" in err


def test_changed_titles_or_images_re_embed(tmp_path):
    """The cache is reused only while its inputs are unchanged: a rewritten title or a replaced image file
    (same name, same size, same mtime) re-embeds; the manifest names the inputs' hash."""
    import json

    rows = make_scenario(tmp_path)
    png = tmp_path / "images" / "0.png"
    Image.open(png).save(png, compress_level=0)  # stored uncompressed: any content of its size has the same length
    first = load_embeddings(tmp_path, embed_scenario(tmp_path, TINY, "random-init", **OPTS).name)
    shards = []
    embed_scenario(tmp_path, TINY, "random-init", on_shard=shards.append, **OPTS)
    assert shards == [] and load_embeddings(tmp_path).manifest == first.manifest  # unchanged: reused as it is
    for r in rows:
        r["title"] = r["title"] and f"a quite different title {r['item']}"
    write_catalogue(tmp_path, rows)
    embed_scenario(tmp_path, TINY, "random-init", on_shard=shards.append, **OPTS)
    retitled = load_embeddings(tmp_path)
    assert shards == [0, 1, 2, 3] and retitled.manifest["inputs_sha256"] != first.manifest["inputs_sha256"]
    assert not np.allclose(retitled.text, first.text) and np.array_equal(retitled.image[4:], first.image[4:])
    st = png.stat()
    Image.open(png).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(png, compress_level=0)
    assert png.stat().st_size == st.st_size  # same size and (below) mtime: only the content tells
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
    embed_scenario(tmp_path, TINY, "random-init", **OPTS)
    reimaged = load_embeddings(tmp_path)
    assert not np.allclose(reimaged.image[0], retitled.image[0]) and np.array_equal(reimaged.image[4:], retitled.image[4:])
    assert json.loads((reimaged.path / "manifest.json").read_text())["plan"]["inputs_sha256"] == \
        reimaged.manifest["inputs_sha256"]


def test_pixel_cap_in_both_decode_paths(tmp_path):
    """An image of more than max_pixels is refused from its header (ok=False, the fallback) on both paths."""
    enc = load_encoder(TINY, "random-init")
    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "a.jpg")
    Image.new("RGB", (40, 30), (20, 200, 20)).save(tmp_path / "b.png")
    paths = [tmp_path / "a.jpg", tmp_path / "b.png"]
    for decode in ("pil", "tensor"):
        assert list(encode_images(enc, paths, decode=decode)[1]) == [True, True]
        assert list(encode_images(enc, paths, decode=decode, max_pixels=40 * 30 - 1)[1]) == [False, False]


def test_tensor_decode_matches_the_pil_path(tmp_path):
    """JPEGs decoded by torchvision and resized as tensors (the --decode gpu code, run on CPU) embed like
    the PIL path to fp16 tolerance; PNGs, broken and missing files fall back to the PIL path."""
    import torch

    from hafvt.embed.clip import resolve_decode

    enc = load_encoder(TINY, "random-init")
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate([(120, 90), (64, 200), (500, 500), (120, 90), (33, 47)]):
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        img = np.stack([np.sin(6 * xx + c) * 0.4 + 0.5 + 0.3 * yy for c in range(3)], -1)
        im = Image.fromarray((np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1) * 255).astype(np.uint8))
        ImageDraw.Draw(im).ellipse((w // 4, h // 4, w // 2, h // 2), fill=COLORS[k % 4])
        im.convert("L" if k == 4 else "RGB").save(tmp_path / f"{k}.jpg", quality=90)  # one grayscale JPEG
        paths.append(tmp_path / f"{k}.jpg")
    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "p.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths += [tmp_path / "p.png", tmp_path / "broken.jpg", None, tmp_path / "missing.jpg"]
    pil, pil_ok = encode_images(enc, paths, batch_size=4, decode="pil")
    ten, ten_ok = encode_images(enc, paths, batch_size=4, workers=2, decode="tensor")
    assert list(pil_ok) == list(ten_ok) == [True] * 6 + [False] * 3
    np.testing.assert_allclose(ten, pil, atol=2e-3)  # fp16 tolerance on unit rows
    assert np.array_equal(ten[5], pil[5])  # the PNG went through PIL in both
    assert resolve_decode("auto", torch.device("cpu")) == "pil" and resolve_decode("cpu", torch.device("cuda")) == "pil"
    assert resolve_decode("auto", torch.device("cuda")) == "tensor"
    assert resolve_decode("auto", torch.device("cuda"), jpeg_draft=True) == "pil"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_decode("gpu", torch.device("cpu"))
