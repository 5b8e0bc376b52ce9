"""Reading, validating and writing the C2DSR benchmark files."""
import json

import pytest

from hafvt.cli import main as cli
from hafvt.data.c2dsr import FormatError, Sequences, data_hash, read_scenario, write_scenario
from hafvt.data.derive import derive
from hafvt.data.stats import item_popularity, length_distribution, table1

ALIST = "10\tAX0\t0\n11\tAX1\t1\n12\tAX2\t2\n"
BLIST = "20\tBY0\t0\n21\tBY1\t1\n"
USERS = "U0\t0\nU1\t1\nU2\t2\n"
# Item 4 (Y) and 1 share a day in line 1: the stable sort keeps their file order.
VALID = "0\t5\t1|200|d|\t0|100|d|\t4|300|d|\t3|300|d|\n1\t6\t2|50|d|\t3|60|d|\n"
TEST = "2\t7\t0|10|d|\t4|20|d|\t1|30|d|\n"


def make_dir(tmp_path, **override):
    files = {"Alist.txt": ALIST, "Blist.txt": BLIST, "userlist.txt": USERS,
             "validdata_new.txt": VALID, "testdata_new.txt": TEST, **override}
    d = tmp_path / "scn"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        if text is not None:
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def test_read_sorts_stably_and_finds_targets(tmp_path):
    scn = read_scenario(make_dir(tmp_path))
    assert (scn.n_x, scn.n_y, scn.pad) == (3, 2, 5)
    assert scn.train is None
    # line 1 sorted by time: 0@100, 1@200, 4@300, 3@300 (tie keeps file order) -> target 3 (Y)
    assert scn.valid.sequence(0).tolist() == [0, 1, 4, 3]
    assert scn.valid.targets.tolist() == [3, 3]
    assert scn.valid.target_domains(scn.n_x).tolist() == [1, 1]
    assert scn.test.targets.tolist() == [1] and scn.test.target_domains(3).tolist() == [0]
    assert scn.items_y.asin == ["BY0", "BY1"]


def test_write_then_read_gives_the_same_scenario(tmp_path):
    scn = read_scenario(make_dir(tmp_path))
    scn.train = Sequences.from_lists([0], [9], [[2, 4, 0]], [[5, 6, 7]])
    out = write_scenario(scn, tmp_path / "out")
    again = read_scenario(out)
    assert again.equals(scn)
    assert data_hash(out) == data_hash(write_scenario(again, tmp_path / "out2"))


@pytest.mark.parametrize("fname,text,line,words", [
    ("validdata_new.txt", "0\t5\t1|200|d|\t0|1x0|d|\n", 1, "item and unix_ts must be integers"),
    ("validdata_new.txt", "0\t5\t1|200|d|\t0|100|d|\n1\t6\t9|50|d|\t3|60|d|\n", 2, "item id 9 out of range"),
    ("testdata_new.txt", "2\t7\t0|10|d|\n", 1, "at least two items"),
    ("testdata_new.txt", "2\t7\t0|10|d\t1|20|d|\n", 1, "is not 'item|unix_ts|date|'"),
    ("validdata_new.txt", b"0\t5\t1|200|d|\t0|100|\xff|\n", 1, "not UTF-8"),
    ("Alist.txt", "10\tAX0\t0\n11\tAX1\t7\n", 2, "local_id"),
    ("userlist.txt", "U0\t0\nU1\n", 2, "reviewer_id"),
])
def test_bad_input_names_file_and_line(tmp_path, fname, text, line, words):
    d = make_dir(tmp_path, **{fname: text})
    with pytest.raises(FormatError) as err:
        read_scenario(d)
    assert str(err.value).startswith(f"{d / fname}:{line}:")
    assert words in str(err.value)
    assert err.value.line == line


def test_missing_file_is_named(tmp_path):
    d = make_dir(tmp_path, **{"testdata_new.txt": None, "Blist.txt": None})
    with pytest.raises(FileNotFoundError, match="Blist.txt, testdata_new.txt"):
        read_scenario(d)


def test_lenient_read_counts_what_it_skips(tmp_path):
    d = make_dir(tmp_path, **{"validdata_new.txt": VALID + "1\t8\t9|1|d|\t0|2|d|\n"})
    scn = read_scenario(d, on_error="skip")
    assert len(scn.valid) == 2
    assert scn.report["validdata_new.txt"]["skipped"] == 1
    assert ":3:" in scn.report["validdata_new.txt"]["first"][0]


def test_stats_and_distributions(tmp_path):
    scn = read_scenario(make_dir(tmp_path))
    s = table1(scn)
    assert (s["items_x"], s["items_y"], s["train"], s["valid_x"], s["valid_y"], s["test_x"], s["test_y"]) == (3, 2, None, 0, 2, 1, 0)
    assert s["avg_length"] == round((4 + 2 + 3) / 3, 2)
    assert length_distribution(scn) == {"valid": {2: 1, 4: 1}, "test": {3: 1}}
    assert item_popularity(scn).tolist() == [2, 2, 1, 2, 2]


def test_derive_splits_users_and_keeps_test(tmp_path):
    scn = read_scenario(make_dir(tmp_path))
    d = derive(scn, train_fraction=0.5, seed=1)
    assert len(d.train) + len(d.valid) == len(scn.valid)
    assert set(d.train.uid).isdisjoint(d.valid.uid)
    assert d.test.equals(scn.test)
    assert "not comparable" in d.report["label"]


def test_cli_stats_json_and_derive(tmp_path, capsys):
    d = make_dir(tmp_path)
    assert cli(["stats", str(d), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["train"] is None and stats["valid_y"] == 2
    assert cli(["derive", str(d), str(tmp_path / "mini"), "--train-fraction", "0.5"]) == 0
    assert json.loads((tmp_path / "mini" / "derived.json").read_text())["train_fraction"] == 0.5
    assert read_scenario(tmp_path / "mini").train is not None


def test_cli_reports_bad_file_without_traceback(tmp_path, capsys):
    d = make_dir(tmp_path, **{"testdata_new.txt": "2\t7\t0|10|d|\n"})
    assert cli(["stats", str(d)]) == 2
    assert "testdata_new.txt:1:" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_food_kitchen_reproduces_table1(real_data_dir, capsys):
    assert cli(["stats", str(real_data_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["items_x"], s["items_y"]) == (29207, 34886)
    assert (s["valid_x"], s["valid_y"], s["test_x"], s["test_y"]) == (2722, 5451, 2747, 5659)
    assert s["train"] is None


@pytest.mark.realdata
def test_real_files_round_trip_byte_for_byte(real_data_dir, tmp_path):
    scn = read_scenario(real_data_dir)
    out = write_scenario(scn, tmp_path / "fk")
    assert read_scenario(out).equals(scn)
    # lines whose tokens were already in time order are written back unchanged
    orig = (real_data_dir / "testdata_new.txt").read_text().splitlines()
    new = (out / "testdata_new.txt").read_text().splitlines()
    assert len(orig) == len(new) and sum(a == b for a, b in zip(orig, new)) > len(orig) // 3


@pytest.mark.realdata
def test_id_hier_trains_on_the_real_food_kitchen_files(real_data_dir, tmp_path):
    """configs/id-hier.yaml (hierarchical attention, IDs only) needs nothing but the C2DSR files."""
    from hafvt.config import load_config
    from hafvt.train import run
    from helpers import REPO, assert_sane_run

    assert cli(["derive", str(real_data_dir), str(tmp_path / "fk"), "--train-fraction", "0.9", "--seed", "0"]) == 0
    cfg = load_config(REPO / "configs" / "id-hier.yaml", ["epochs=1", "q=16", "train_targets=last", "n_neg=99"])
    res = run(tmp_path / "fk", cfg, tmp_path / "run", progress=False)
    scn = read_scenario(tmp_path / "fk")
    assert_sane_run(res, tmp_path / "run", scn.n_x, scn.n_y)
    assert res["provenance"]["data_kind"] == "derived" and res["provenance"]["derived_from"]["train_fraction"] == 0.9
