"""The three aligned views of a history (PROTOCOL.md, 'From a line to an example')."""
from hafvt.data.batches import build_views
from hafvt.data.c2dsr import Sequences


def test_views_of_one_line():
    # n_x = 3: items 0-2 are X, 3-5 are Y; padding = 6. Line: 0 3 1 4 5 2 (target 2, an X item).
    seqs = Sequences.from_lists([0], [0], [[0, 3, 1, 4, 5, 2]], [[1, 2, 3, 4, 5, 6]])
    v = build_views(seqs, n_x=3, n_items=6, maxlen=6)
    P = 6
    assert v.seq[0, 2].tolist() == [P, 0, 3, 1, 4, 5]  # mixed, left-padded history
    assert v.pos[0, 2].tolist() == [0, 1, 2, 3, 4, 5]
    assert v.tgt[0, 2].tolist() == [-1, 3, 1, 4, 5, 2]  # next mixed item
    assert v.seq[0, 0].tolist() == [P, 0, P, 1, P, P]  # X-only: same slots, Y items padded
    assert v.pos[0, 0].tolist() == [0, 1, 0, 2, 0, 0]  # positions count X items only
    assert v.tgt[0, 0].tolist() == [-1, 1, -1, 2, -1, -1]  # next X item after each X item
    assert v.seq[0, 1].tolist() == [P, P, 3, P, 4, 5]
    assert v.tgt[0, 1].tolist() == [-1, -1, 4, -1, 5, -1]  # the last Y item has no next Y item
    assert v.last[0].tolist() == [3, 5, 5]  # last X item at slot 3, last Y at 5
    assert v.target.tolist() == [2] and v.domain.tolist() == [0]
    assert v.n_targets.tolist() == [[2, 2, 5]]


def test_truncation_and_last_only():
    seqs = Sequences.from_lists([0], [0], [[0, 1, 3, 2, 4]], [[1, 2, 3, 4, 5]])
    v = build_views(seqs, n_x=3, n_items=6, maxlen=2, last_only=True)
    assert v.seq[0, 2].tolist() == [3, 2]  # the last maxlen history items
    assert v.tgt[0, 2].tolist() == [-1, 4]  # only the readout slot keeps a target
    assert v.tgt[0, 0].tolist() == [-1, -1]  # the last X item (2) has no next X item
