"""Raw Amazon dumps (2014 and 2018 formats) -> a C2DSR scenario + catalogue; every filter acts."""
from __future__ import annotations

import gzip
import json
import random

import pytest

from hafvt.data.amazon import attach_catalogue, build_from_dumps, iter_meta, parse_record
from hafvt.data.c2dsr import read_scenario
from hafvt.data.catalogue import CatalogueError, read_catalogue, write_catalogue

DAY = 86400
T0 = 1_300_000_000 - 1_300_000_000 % DAY

X_ITEMS = [f"X{i}" for i in range(6)]  # popular Food items
Y_ITEMS = [f"Y{i}" for i in range(6)]  # popular Kitchen items


def _plan():
    """(user, domain, asin, day) of the fixture world; comments say which filter each part triggers."""
    rows = []
    for u in range(1, 13):  # 12 regular users: 6 X + 6 Y each -> every popular item has >= 12 interactions
        for k, a in enumerate(X_ITEMS):
            rows.append((f"U{u:02d}", "X", a, 2 * k))
        for k, a in enumerate(Y_ITEMS):
            rows.append((f"U{u:02d}", "Y", a, 2 * k + 1))
    rows += [(f"U{u:02d}", "X", "XRARE", 20) for u in (1, 2)]  # item with 2 interactions: item filter
    rows += [("SHORT", "X", a, k) for k, a in enumerate(X_ITEMS[:3])]  # 5 interactions: user filter
    rows += [("SHORT", "Y", a, 5 + k) for k, a in enumerate(Y_ITEMS[:2])]
    rows += [("ONLYX", "X", a, k) for k, a in enumerate(X_ITEMS * 2)]  # only in X: both-domain filter
    rows += [("ONLYX", "X", "XRARE", 30 + k) for k in range(10)]  # ...and cannot rescue XRARE
    # 20 items: the oldest window (5 X items) lacks Y items -> the per-domain filter drops it
    rows += [("MIXED", "X", X_ITEMS[k], k) for k in range(5)]
    rows += [("MIXED", "XY"[k % 2], (X_ITEMS, Y_ITEMS)[k % 2][k % 6], 10 + k) for k in range(15)]
    # 30 items: two good windows -> one train sequence + one latest sequence
    rows += [("LONG", "XY"[k % 2], (X_ITEMS, Y_ITEMS)[k % 2][k % 6], k) for k in range(30)]
    return rows


TITLES = {"X0": "Green tea &amp; honey", "X1": "Oats", "X2": None, "X3": "Rice <b>500g</b>", "X4": "Salt", "X5": "Pepper",
          "Y0": "Pan", "Y1": "Kettle", "Y2": "Knife", "Y3": "Whisk", "Y4": "Spoon"}  # Y5 has no metadata


def write_fixture(root):
    """Write the four dumps: X in the 2014 format, Y in the 2018 format, lines shuffled."""
    rows = _plan()
    rows.append(rows[0])  # the same review twice
    random.Random(1).shuffle(rows)  # dumps are not in time order
    rev = {"X": [], "Y": []}
    for user, d, asin, day in rows:
        r = {"reviewerID": user, "asin": asin, "unixReviewTime": T0 + day * DAY, "overall": 5.0, "reviewText": "ok"}
        if d == "Y":  # 2018 adds these
            r.update(verified=True, reviewTime="01 1, 2011", style={"Size:": " Large"})
        rev[d].append(json.dumps(r))
    # 2014 metadata: Python literals (single quotes), image in imUrl; one line is hostile code
    meta_x = [repr({"asin": a, "imUrl": f"http://img.example/{a}.jpg", "salesRank": {"Grocery": 3},
                    "categories": [["Grocery"]], **({"title": t} if t else {})})
              for a in X_ITEMS + ["XRARE"] if (t := TITLES.get(a)) is not None or a == "X2"]
    meta_x.insert(2, "__import__('os').system('touch PWNED')")
    # 2018 metadata: JSON, imageURLHighRes preferred over the imageURL thumbnails
    meta_y = [json.dumps({"asin": a, "title": TITLES[a], "imageURL": [f"https://img.example/{a}._SS40_.jpg"],
                          "imageURLHighRes": [f"https://img.example/{a}.jpg"] if a != "Y4" else []})
              for a in Y_ITEMS if a in TITLES]
    paths = {"reviews_x": root / "reviews_Grocery.json.gz", "meta_x": root / "meta_Grocery.json.gz",
             "reviews_y": root / "Home_and_Kitchen.json.gz", "meta_y": root / "meta_Home_and_Kitchen.json"}
    for key, lines in (("reviews_x", rev["X"]), ("meta_x", meta_x), ("reviews_y", rev["Y"]), ("meta_y", meta_y)):
        data = ("\n".join(lines) + "\n").encode()
        paths[key].write_bytes(gzip.compress(data) if paths[key].suffix == ".gz" else data)
    return paths


@pytest.fixture
def built(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = write_fixture(tmp_path)
    report = build_from_dumps(tmp_path / "scn", paths["reviews_x"], paths["meta_x"], paths["reviews_y"], paths["meta_y"])
    return tmp_path, paths, report


def test_every_filter_acts(built):
    root, _, report = built
    f = report["filters"]
    assert f["reviews_of_one_domain_users"] == 22  # ONLYX
    assert f["duplicate_reviews"] == 1
    assert f["items_below_min"] == 1  # XRARE
    assert f["users_below_min"] == 1  # SHORT
    assert f["sequences_below_min_per_domain"] == 1  # MIXED's oldest window
    assert f["users_reordered_by_time"] > 0
    assert (f["n_users"], f["train"], f["valid"], f["test"]) == (14, 1, 7, 7)
    assert not (root / "PWNED").exists()  # the hostile metadata line was not executed


def test_scenario_files(built):
    root, _, _ = built
    scn = read_scenario(root / "scn")
    assert (scn.n_x, scn.n_y) == (6, 6)
    assert sorted(scn.items_x.asin) == X_ITEMS and sorted(scn.items_y.asin) == Y_ITEMS
    users = dict(scn.users)
    assert set(users) == {f"U{u:02d}" for u in range(1, 13)} | {"MIXED", "LONG"}
    assert [u for u, _ in scn.users] == sorted(users)
    assert not set(scn.valid.uid) & set(scn.test.uid)
    for split in (scn.train, scn.valid, scn.test):
        for i in range(len(split)):
            seq = split.sequence(i)
            ts = split.ts[split.offsets[i]:split.offsets[i + 1]]
            assert list(ts) == sorted(ts)
            assert (seq < scn.n_x).sum() >= 3 and (seq >= scn.n_x).sum() >= 3 and len(seq) <= 15
    # LONG: the older window is in train, the newest one is its valid/test line
    long_uid = users["LONG"]
    assert list(scn.train.uid) == [long_uid]
    latest = scn.valid if long_uid in scn.valid.uid else scn.test
    row = list(latest.uid).index(long_uid)
    assert latest.ts[latest.offsets[row + 1] - 1] == T0 + 29 * DAY
    assert scn.train.ts.max() < latest.ts[latest.offsets[row]]
    # MIXED keeps only its newest 15 items (its 5 oldest, all X, were dropped)
    m = users["MIXED"]
    split = scn.valid if m in scn.valid.uid else scn.test
    row = list(split.uid).index(m)
    assert split.lengths[row] == 15 and split.ts[split.offsets[row]] == T0 + 10 * DAY


def test_catalogue_from_both_meta_formats(built):
    root, paths, report = built
    scn = read_scenario(root / "scn")
    rows = read_catalogue(root / "scn", scn.n_x, scn.n_y)
    by_asin = {r["asin"]: r for r in rows}
    assert [r["item"] for r in rows] == list(range(12))
    assert [r["domain"] for r in rows] == ["X"] * 6 + ["Y"] * 6
    assert by_asin["X0"]["title"] == "Green tea & honey"
    assert by_asin["X3"]["title"] == "Rice 500g"
    assert by_asin["X2"]["title"] is None and by_asin["X2"]["image"] == "http://img.example/X2.jpg"
    assert by_asin["Y0"]["image"] == "https://img.example/Y0.jpg"  # high-res over the thumbnail
    assert by_asin["Y4"]["image"] == "https://img.example/Y4._SS40_.jpg"  # only the thumbnail
    assert by_asin["Y5"] == {"item": by_asin["Y5"]["item"], "domain": "Y", "asin": "Y5", "title": None, "image": None}
    assert report["catalogue"]["bad_lines"] == 1 and report["catalogue"]["Y_without_metadata"] == 1


def test_attach_catalogue_to_release(built):
    root, paths, _ = built
    first = (root / "scn" / "catalogue.jsonl").read_text()
    (root / "scn" / "catalogue.jsonl").unlink()
    stats = attach_catalogue(root / "scn", paths["meta_x"], paths["meta_y"])
    assert (root / "scn" / "catalogue.jsonl").read_text() == first
    assert stats["without_title"] == 2


def test_parse_record_never_evaluates():
    assert parse_record("{'asin': 'A', 'title': 'It\\'s'}") == {"asin": "A", "title": "It's"}
    assert parse_record(b'{"asin": "B"}') == {"asin": "B"}
    with pytest.raises((ValueError, SyntaxError)):
        parse_record("__import__('os').getcwd()")


def test_iter_meta_filters_by_asin(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text(repr({"asin": "A", "title": "a"}) + "\n" + repr({"asin": "B", "title": "b"}) + "\n")
    assert list(iter_meta(p, {"B"})) == [("B", "b", None)]


def test_catalogue_errors_name_file_and_line(tmp_path):
    write_catalogue(tmp_path, [{"item": 0, "domain": "X", "asin": "A", "title": None, "image": None},
                               {"item": 1, "domain": "Y", "asin": "B", "title": "b", "image": "images/1.png"}])
    assert len(read_catalogue(tmp_path, 1, 1)) == 2
    with pytest.raises(CatalogueError, match=r"catalogue.jsonl: 2 rows, but the scenario has 1 \+ 2"):
        read_catalogue(tmp_path, 1, 2)
    path = tmp_path / "catalogue.jsonl"
    path.write_text(path.read_text() + '{"item": 5, "domain": "Y", "asin": "C", "title": null, "image": null}\n')
    with pytest.raises(CatalogueError, match=r"catalogue.jsonl:3: item 5 should be 2"):
        read_catalogue(tmp_path)
    path.write_text("{oops\n")
    with pytest.raises(CatalogueError, match=r"catalogue.jsonl:1: not JSON"):
        read_catalogue(tmp_path)


def test_cli_build_and_attach(tmp_path, capsys):
    from hafvt.cli import main

    paths = write_fixture(tmp_path)
    args = ["catalogue", "build", str(tmp_path / "cli"), "--reviews-x", str(paths["reviews_x"]), "--meta-x",
            str(paths["meta_x"]), "--reviews-y", str(paths["reviews_y"]), "--meta-y", str(paths["meta_y"])]
    assert main(args) == 0
    assert '"valid": 7' in capsys.readouterr().out
    assert main(["catalogue", "attach", str(tmp_path / "cli"), "--meta-x", str(paths["meta_x"]),
                 "--meta-y", str(paths["meta_y"])]) == 0
    assert main(["catalogue", "attach", str(tmp_path / "nowhere"), "--meta-x", "a", "--meta-y", "b"]) == 2
    assert "scenario directory not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_attach_to_the_real_food_kitchen_release(real_data_dir, tmp_path):
    """The official release gets titles and images through its ASIN column (metadata here: 3 lines we write)."""
    import shutil

    for f in ("Alist.txt", "Blist.txt", "userlist.txt", "validdata_new.txt", "testdata_new.txt"):
        shutil.copy(real_data_dir / f, tmp_path / f)  # never write into the shared release
    asin_x = (tmp_path / "Alist.txt").read_text().split("\n", 1)[0].split("\t")[1]
    asin_y = (tmp_path / "Blist.txt").read_text().split("\n", 1)[0].split("\t")[1]
    (tmp_path / "meta_x.json").write_text(repr({"asin": asin_x, "title": "Food one", "imUrl": "http://x/1.jpg"}) + "\n")
    (tmp_path / "meta_y.json").write_text(json.dumps({"asin": asin_y, "title": "Kitchen one", "imageURL": []}) + "\n")
    stats = attach_catalogue(tmp_path, tmp_path / "meta_x.json", tmp_path / "meta_y.json")
    rows = read_catalogue(tmp_path, 29207, 34886)
    assert rows[0]["title"] == "Food one" and rows[29207]["title"] == "Kitchen one" and rows[29207]["image"] is None
    assert stats["X_without_metadata"] == 29206 and stats["Y_without_metadata"] == 34885
