"""The embedded demo scenario: a seeded, synthetic two-domain benchmark with a catalogue.

It is written in the C2DSR format (PROTOCOL.md) plus ``catalogue.jsonl`` (titles, images) and
``images/<id>.png``, so everything that runs on the real files runs on it. It is a synthetic
demo: its numbers are **not comparable with the papers**.

The latent model (all of it is recorded in ``demo.json``; per-item latents in ``latent.json``):

- *Tastes*: ``K`` taste clusters shared by both domains ("movies" X, "books" Y). Each cluster has
  a prototype look (colour, shape, texture) and a few title words; an item draws its cluster and
  then each look attribute and title word from the prototype, with some noise. So an item's image
  and title reveal its taste, and the same taste looks alike in both domains.
- *Popularity*: a Zipf law over a random ranking of each domain's items, so most items are rare;
  an ID embedding learns little about them, while their image and title still tell their taste.
- *A growing catalogue*: items are released over the training period, a share ``new_items`` only
  after it (each domain-taste group's most popular item from the start). An item's popularity decays
  with its age; train lines see it integrated over the training period, valid/test lines at the
  end, when the new items are out and, with weight ``drift``, popularity follows a fresh Zipf
  ranking. So many valid/test targets occur rarely or never in train (the cold items), as in the
  real files; their image and title still tell their taste. ``cold_targets`` counts them.
- *Users*: a sparse taste mixture that drifts from a start to an end mixture along the sequence,
  and a propensity for domain Y. The next item's taste mostly repeats the current one, else follows
  a fixed taste-to-taste transition, else comes from the mixture; the next item's domain mostly
  repeats the last one. Within a taste, an item is drawn by popularity, sometimes restricted to
  the previous item's colour ("style continuity"), sometimes replaced by a popular item at random;
  like the real files, no item repeats within a line.
- *Files*: day-granular timestamps with ties; about half of the lines are written in shuffled token
  order, shuffled so that the reader's stable sort restores the generated order exactly.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hafvt.data.c2dsr import ItemTable, Scenario, Sequences, format_date, write_scenario
from hafvt.io import atomic_write_json, atomic_write_text

NOTE = "synthetic demo — not comparable with the papers"

# Item and sequence counts. ``paper`` copies Movie-Book (PROTOCOL.md, Table 1); valid/test are
# given per target domain. Images are off by default at ``paper`` size (it is for GPU benchmarks).
# ``zipf`` is the popularity exponent: the small sizes have many interactions per item and need a
# steep law for items to stay rare; at ``paper`` size 0.6 gives about the real Food-Kitchen shape
# (the top 1% of items take ~17% of interactions, ~40% of items seen <= 2 times).
# ``new_items``, ``age_scale``, ``drift``: the catalogue grows and popularity moves (see Latent), so
# that many valid/test targets are rare or absent in train, as in the real files (36% of FK-mini's
# test targets never occur in its train split). ``small`` (the book's demo) keeps about 2,400 items,
# since the softmax over all items dominates an epoch, and has 40-45% unseen test targets and
# 75-660 lines in each cold-item bucket (0, 1-4, 5-19, 20+ train occurrences) per domain (seeds 0-2).
SIZES = {
    "tiny": dict(n_x=150, n_y=200, train=400, valid_x=20, valid_y=40, test_x=20, test_y=40, zipf=1.5, new_items=0.3,
                 age_scale=1.0, drift=0.3, images=True),
    "small": dict(n_x=1000, n_y=1400, train=6000, valid_x=1200, valid_y=1500, test_x=1200, test_y=1500, zipf=1.1,
                  new_items=0.3, age_scale=0.8, drift=0.5, images=True),
    "paper": dict(n_x=36845, n_y=63937, train=58515, valid_x=2032, valid_y=5612, test_x=1978, test_y=5730, zipf=0.6,
                  new_items=0.0, age_scale=1.0, drift=0.0, images=False),
}


@dataclass(frozen=True)
class Latent:
    """The generator's parameters (written to ``demo.json``)."""

    k: int = 12  # taste clusters shared by both domains
    attr_noise: float = 0.25  # chance an item's colour/shape/texture/title word ignores its cluster
    zipf: float = 1.1  # popularity exponent over a random ranking of each domain's items (set per size)
    taste_alpha: float = 0.3  # Dirichlet concentration of a user's taste mixtures (small = few tastes)
    p_stay: float = 0.6  # next taste = current taste
    p_transition: float = 0.25  # next taste = a successor of the current one (else: from the mixture)
    n_successors: int = 2  # successors per taste in the transition structure
    p_style: float = 0.35  # the item keeps the previous item's colour (when the taste has such items)
    p_random: float = 0.05  # the item is a popular item of the domain, whatever the taste
    new_items: float = 0.0  # share of each domain's items released after the training period (set per size)
    age_scale: float = 1.0  # an item's popularity decays as exp(-age / age_scale), age in training periods (set per size)
    drift: float = 0.0  # share of valid/test popularity that follows a fresh Zipf ranking (set per size)
    p_y: float = 0.65  # mean propensity for domain Y (about 2/3 of targets are Y)
    domain_persist: float = 0.5  # next domain = last domain (else drawn from the propensity)
    p_tie: float = 0.25  # an interaction shares the day of the previous one
    mean_gap_days: float = 30.0
    p_shuffled: float = 0.5  # lines written in shuffled token order
    # length 6..15 frequencies of the real Food-Kitchen valid split
    length_counts: tuple = (1130, 1215, 1137, 918, 717, 629, 509, 389, 385, 1144)
    image_px: int = 64


COLOURS = {  # name in titles: RGB
    "Scarlet": (200, 40, 40), "Amber": (230, 130, 30), "Golden": (225, 200, 40), "Emerald": (40, 160, 70),
    "Teal": (30, 150, 150), "Azure": (50, 110, 220), "Indigo": (70, 50, 160), "Violet": (150, 60, 190),
    "Rose": (230, 110, 160), "Umber": (120, 80, 40),
}
SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross")
TEXTURES = ("plain", "stripes", "diagonal", "dots", "checks")
WORDS = (  # the first 4*K are the clusters' title words, the rest only appear as noise
    "Midnight Harbor Whisper Iron Garden Storm Silent Hollow Ember Frost Velvet River Shadow Crown Meadow "
    "Thunder Lantern Orchard Canyon Glacier Echo Falcon Willow Copper Marble Tide Ash Summit Harvest Comet "
    "Prairie Raven Cedar Quartz Breeze Forge Lagoon Ivory Bramble Nova Drift Pebble Saffron Tundra Juniper "
    "Mosaic Pilgrim Rune Sable Tempest Vesper Wren Zephyr Aurora Bastion Cinder Dune Fable Gale Haven Isle "
    "Kestrel Lumen Mirth Nectar Onyx Quill Reverie Solace Thistle Wander Yonder Zenith"
).split()
NOUNS = {  # per domain: X "movies", Y "books"
    0: ("Film", "Story", "Saga", "Show", "Feature", "Chronicle"),
    1: ("Novel", "Tales", "Guide", "Memoir", "Poems", "Handbook"),
}
WORDS_PER_CLUSTER = 4


def _rng(seed: int, part: int) -> np.random.Generator:
    """An independent stream per part, so changing one part leaves the others as they were."""
    return np.random.default_rng([seed, part])


# --------------------------------------------------------------------------- items


def _prototypes(rng, lat: Latent) -> dict:
    """Each taste cluster's look (distinct colour/shape/texture triples), title words, successors."""
    n_col, n_sh, n_tex = len(COLOURS), len(SHAPES), len(TEXTURES)
    triples = rng.choice(n_col * n_sh * n_tex, size=lat.k, replace=False)
    colour = np.resize(rng.permutation(n_col), lat.k)  # spread colours over clusters first
    shape, texture = (triples // n_tex) % n_sh, triples % n_tex
    successors = np.stack([rng.choice(np.delete(np.arange(lat.k), c), lat.n_successors, replace=False) for c in range(lat.k)])
    words = np.arange(lat.k * WORDS_PER_CLUSTER).reshape(lat.k, WORDS_PER_CLUSTER)
    return dict(colour=colour, shape=shape, texture=texture, successors=successors, words=words,
                share=rng.dirichlet(np.full(lat.k, 3.0)))


def _noisy(rng, proto: np.ndarray, n_values: int, noise: float) -> np.ndarray:
    """The prototype value, or with chance ``noise`` a uniformly random one."""
    flip = rng.random(len(proto)) < noise
    return np.where(flip, rng.integers(0, n_values, len(proto)), proto)


def _item_latents(rng, n_x: int, n_y: int, lat: Latent, proto: dict) -> dict:
    """Per item (global id order): domain, cluster, look attributes, popularity rank and weight."""
    domain = np.repeat([0, 1], [n_x, n_y])
    cluster = np.concatenate([_clusters(rng, n, lat.k, proto["share"]) for n in (n_x, n_y)])
    rank = np.concatenate([rng.permutation(n) for n in (n_x, n_y)])  # 0 = most popular in its domain
    return dict(
        domain=domain, cluster=cluster, pop_rank=rank, weight=(rank + 1.0) ** -lat.zipf,
        colour=_noisy(rng, proto["colour"][cluster], len(COLOURS), lat.attr_noise),
        shape=_noisy(rng, proto["shape"][cluster], len(SHAPES), lat.attr_noise),
        texture=_noisy(rng, proto["texture"][cluster], len(TEXTURES), lat.attr_noise),
    )


def _release(rng, items: dict, lat: Latent) -> np.ndarray:
    """When each item joins the catalogue, as a fraction of the training period: uniform on
    [0, 1/(1 - new_items)), so a ``new_items`` share is released after it (``release > 1``: new items,
    drawn only in valid/test lines). Each (domain, taste) group's most popular item is there from 0,
    so training can draw every taste."""
    release = rng.random(len(items["domain"])) / (1 - lat.new_items)
    group = items["domain"] * lat.k + items["cluster"]
    order = np.lexsort((items["pop_rank"], group))
    release[order[np.r_[True, group[order][1:] != group[order][:-1]]]] = 0.0
    return release


def _train_weights(items: dict, lat: Latent) -> np.ndarray:
    """Popularity in train lines: the Zipf weight times the decaying popularity integrated over the
    training period [0, 1] from the item's release on (0 for new items)."""
    if lat.new_items <= 0:  # every item is out from 0: the same factor for all, so the plain weight
        return items["weight"]
    on_market = np.clip(1 - items["release"], 0, None)
    return items["weight"] * lat.age_scale * -np.expm1(-on_market / lat.age_scale)


def _eval_weights(items: dict, lat: Latent) -> np.ndarray:
    """Popularity in valid/test lines, observed once every item is out (time 1/(1 - new_items)):
    the Zipf weight times the decayed popularity, so recent and new items are favoured."""
    w = items["weight"]
    if lat.drift > 0:  # each component sums to 1 per domain, so ``drift`` is the fresh ranking's share
        fresh = (items["fresh_rank"] + 1.0) ** -lat.zipf
        w = sum(share * v / np.bincount(items["domain"], v)[items["domain"]] for share, v in ((1 - lat.drift, w), (lat.drift, fresh)))
    if lat.new_items <= 0:
        return w
    age = 1 / (1 - lat.new_items) - items["release"]
    return w * np.exp(-age / lat.age_scale)


def _clusters(rng, n: int, k: int, share: np.ndarray) -> np.ndarray:
    """Clusters of one domain's items: every cluster has at least one item, the rest by ``share``."""
    c = np.concatenate([np.arange(min(k, n)), rng.choice(k, size=max(n - k, 0), p=share)])
    return rng.permutation(c)


def _titles(rng, items: dict, lat: Latent, proto: dict) -> list[str]:
    """Titles: an optional colour word, two taste words (some noise words), a domain noun, a volume."""
    n = len(items["cluster"])
    first = rng.integers(0, WORDS_PER_CLUSTER, n)
    slots = np.stack([first, (first + rng.integers(1, WORDS_PER_CLUSTER, n)) % WORDS_PER_CLUSTER], axis=1)  # two different
    words = proto["words"][items["cluster"][:, None], slots]
    noise = rng.random((n, 2)) < lat.attr_noise
    words = np.where(noise, rng.integers(0, len(WORDS), (n, 2)), words)
    with_colour = rng.random(n) < 0.4
    noun = rng.integers(0, len(NOUNS[0]), n)
    volume = np.where(rng.random(n) < 0.2, rng.integers(2, 10, n), 0)
    colour_names = list(COLOURS)
    titles = []
    for i in range(n):
        parts = [colour_names[items["colour"][i]]] if with_colour[i] else []
        parts += [WORDS[words[i, 0]], WORDS[words[i, 1]], NOUNS[items["domain"][i]][noun[i]]]
        if volume[i]:
            parts.append(f"Vol. {volume[i]}")
        titles.append(" ".join(parts))
    return titles


# --------------------------------------------------------------------------- sequences


class _Family:
    """Popularity-weighted draws of an item from one of many groups (e.g. a domain's taste cluster)."""

    def __init__(self, keys: np.ndarray, weights: np.ndarray, n_groups: int):
        order = np.argsort(keys, kind="stable")
        k, w = keys[order], weights[order]
        self.items = order
        groups = np.arange(n_groups)
        self.start, self.end = np.searchsorted(k, groups), np.searchsorted(k, groups, side="right")
        self.size = self.end - self.start
        csum = np.cumsum(w)
        before = np.concatenate([[0.0], csum])[self.start]  # weight of all earlier groups
        self.total = total = np.concatenate([[0.0], csum])[self.end] - before  # a group of total 0 cannot be drawn
        # cumulative weights within each group, scaled to (g, g+1]
        self.cum = k + (csum - before[k]) / np.where(total > 0, total, 1.0)[k]

    def draw(self, g: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cum, g + u, side="right")
        return self.items[np.clip(pos, self.start[g], self.end[g] - 1)]


class _ItemSampler:
    """Draws the next item given its domain, taste, and the previous item's colour.

    Only items of positive ``weight`` are ever drawn (every (domain, taste) group must have one)."""

    def __init__(self, items: dict, lat: Latent, weight: np.ndarray):
        self.lat, self.n_col = lat, len(COLOURS)
        d, c = items["domain"], items["cluster"]
        self.colour = items["colour"]
        self.by_domain = _Family(d, weight, 2)
        self.by_taste = _Family(d * lat.k + c, weight, 2 * lat.k)
        if not (self.by_taste.total > 0).all():
            raise ValueError("every (domain, taste) group needs an item of positive weight")
        self.by_style = _Family((d * lat.k + c) * self.n_col + items["colour"], weight, 2 * lat.k * self.n_col)
        self.uniform = _Family(d, (weight > 0).astype(float), 2)  # the last resort of _no_repeats

    def draw(self, rng, domain, taste, prev_item) -> np.ndarray:
        mode, u = rng.random(len(domain)), rng.random(len(domain))
        g = domain * self.lat.k + taste
        item = self.by_taste.draw(g, u)
        g_style = g * self.n_col + np.where(prev_item >= 0, self.colour[np.maximum(prev_item, 0)], 0)
        style = (mode < self.lat.p_style) & (prev_item >= 0) & (self.by_style.total[g_style] > 0)
        item[style] = self.by_style.draw(g_style[style], u[style])
        rand = mode >= 1 - self.lat.p_random
        item[rand] = self.by_domain.draw(domain[rand], u[rand])
        return item


def _categorical(rng, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    return np.minimum((cum < rng.random(len(probs))[:, None] * cum[:, -1:]).sum(1), probs.shape[1] - 1)


def _simulate(rng, lat: Latent, proto: dict, sampler: _ItemSampler, lengths: np.ndarray, target_domain: np.ndarray) -> np.ndarray:
    """Item ids (n_users, max_len) of every user's sequence; -1 beyond a sequence's length.

    ``target_domain`` forces the domain of a line's last item (-1: not forced)."""
    n, t_max = len(lengths), int(lengths.max())
    # the propensity for Y given a forced target domain (a Beta posterior after one observation)
    a, b = 4.0 * lat.p_y, 4.0 * (1 - lat.p_y)
    p_y = rng.beta(a + (target_domain == 1), b + (target_domain == 0))
    mix0, mix1 = (rng.dirichlet(np.full(lat.k, lat.taste_alpha), n) for _ in range(2))
    out = np.full((n, t_max), -1, dtype=np.int64)
    taste = domain = None
    prev = np.full(n, -1)
    for t in range(t_max):
        frac = np.minimum(t / np.maximum(lengths - 1, 1), 1.0)[:, None]
        from_mix = _categorical(rng, (1 - frac) * mix0 + frac * mix1)
        r, pick = rng.random(n), rng.integers(0, lat.n_successors, n)
        fresh_domain = (rng.random(n) < p_y).astype(np.int64)
        if t == 0:
            taste, domain = from_mix, fresh_domain
        else:
            successor = proto["successors"][taste, pick]
            taste = np.where(r < lat.p_stay, taste, np.where(r < lat.p_stay + lat.p_transition, successor, from_mix))
            domain = np.where(rng.random(n) < lat.domain_persist, domain, fresh_domain)
        domain = np.where((t == lengths - 1) & (target_domain >= 0), target_domain, domain)
        item = sampler.draw(rng, domain, taste, prev)
        out[:, t] = np.where(t < lengths, _no_repeats(rng, sampler, out[:, :t], item, domain, taste), -1)
        prev = item
    return out


def _no_repeats(rng, sampler: _ItemSampler, history: np.ndarray, item, domain, taste) -> np.ndarray:
    """Redraw items already in the user's history (the real files have no repeats in a line):
    first within the taste, then any popular item of the domain, then uniformly among the domain's
    drawable items."""
    item = item.copy()
    for attempt in range(200):
        dup = (history == item[:, None]).any(1)
        if not dup.any():
            return item
        d, u = domain[dup], rng.random(int(dup.sum()))
        if attempt < 10:
            item[dup] = sampler.by_taste.draw(d * sampler.lat.k + taste[dup], u)
        elif attempt < 20:
            item[dup] = sampler.by_domain.draw(d, u)
        else:
            item[dup] = sampler.uniform.draw(d, u)
    raise RuntimeError("could not draw an item the user has not seen")


def _timestamps(rng, lat: Latent, lengths: np.ndarray) -> np.ndarray:
    """Unix times (midnight UTC, day granularity) per token of the flattened lines, non-decreasing in a line."""
    first_day = 12784  # 2005-01-01
    start = first_day + rng.integers(0, 9 * 365, len(lengths))
    n_tok = int(lengths.sum())
    gaps = np.where(rng.random(n_tok) < lat.p_tie, 0, rng.geometric(1 / lat.mean_gap_days, n_tok))
    line = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    gaps[offsets[:-1]] = 0
    csum = np.cumsum(gaps)
    days = start[line] + csum - csum[offsets[:-1]][line]
    return days * 86400


def _file_order(rng, lat: Latent, lengths: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """A permutation of the flattened tokens: about half of the lines shuffled, ties kept in order.

    Tokens sharing a line and a day keep their relative order, so a stable sort by timestamp
    gives back the generated order."""
    n_lines = len(lengths)
    line = np.repeat(np.arange(n_lines), lengths)
    pos = np.arange(len(ts))
    keys = np.where((rng.random(n_lines) < lat.p_shuffled)[line], rng.random(len(ts)), pos / max(len(ts), 1))
    # inside each (line, day) group, hand the group's sorted keys out in generated order
    keys = keys[np.lexsort((keys, ts, line))]
    return np.lexsort((keys, line))


def _dates(ts: np.ndarray) -> np.ndarray:
    uniq, inv = np.unique(ts, return_inverse=True)
    return np.array([format_date(t) for t in uniq], dtype=object)[inv.reshape(-1)]


# --------------------------------------------------------------------------- the scenario


@dataclass
class Demo:
    """A generated demo: the scenario, its catalogue, and what is needed to write and check it."""

    scenario: Scenario
    catalogue: list[dict]
    latents: dict  # per-item arrays: domain, cluster, colour, shape, texture, pop_rank, new (0/1), release
    info: dict  # demo.json
    file_order: dict = field(default_factory=dict)  # split -> the token permutation written to the file


def _split_sizes(size: dict) -> dict:
    """Per split: (lines, forced target domains)."""
    return {
        "train": (size["train"], np.full(size["train"], -1)),
        "valid": (size["valid_x"] + size["valid_y"], np.repeat([0, 1], [size["valid_x"], size["valid_y"]])),
        "test": (size["test_x"] + size["test_y"], np.repeat([0, 1], [size["test_x"], size["test_y"]])),
    }


def build(size: str = "tiny", seed: int = 0, lat: Latent | None = None) -> Demo:
    """Generate the demo scenario of ``size`` (a key of SIZES) deterministically from ``seed``."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}")
    sz = SIZES[size]
    lat = lat or Latent(**{k: sz[k] for k in ("zipf", "new_items", "age_scale", "drift")})
    proto = _prototypes(_rng(seed, 0), lat)
    items = _item_latents(_rng(seed, 1), sz["n_x"], sz["n_y"], lat, proto)
    items["release"] = _release(_rng(seed, 9), items, lat) if lat.new_items > 0 else np.zeros(len(items["domain"]))
    items["fresh_rank"] = np.concatenate([_rng(seed, 10).permutation(n) for n in (sz["n_x"], sz["n_y"])])
    items["new"] = items["release"] > 1
    titles = _titles(_rng(seed, 2), items, lat, proto)
    samplers = {"train": _ItemSampler(items, lat, _train_weights(items, lat)),
                "eval": _ItemSampler(items, lat, _eval_weights(items, lat))}

    splits = _split_sizes(sz)
    n_users = sum(n for n, _ in splits.values())
    urng = _rng(seed, 3)
    user_of = np.split(urng.permutation(n_users), np.cumsum([n for n, _ in splits.values()])[:-1])
    sample_id = np.cumsum(urng.integers(1, 12, n_users))
    length_p = np.array(lat.length_counts, float) / sum(lat.length_counts)

    seqs, order = {}, {}
    for k, (name, (n, target_domain)) in enumerate(splits.items()):
        rng = _rng(seed, 4 + k)
        target_domain = rng.permutation(target_domain)
        uids = np.sort(user_of[k])
        lengths = 6 + rng.choice(len(length_p), n, p=length_p)
        grid = _simulate(rng, lat, proto, samplers["train" if name == "train" else "eval"], lengths, target_domain)
        flat = grid[grid >= 0]  # row-major: line by line, in generated order
        ts = _timestamps(rng, lat, lengths)
        order[name] = _file_order(rng, lat, lengths, ts)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        seqs[name] = Sequences(uid=uids, sample_id=sample_id[uids], offsets=offsets, items=flat, ts=ts, dates=_dates(ts))

    n_x = sz["n_x"]
    original = _rng(seed, 7).choice(10 * (n_x + sz["n_y"]), n_x + sz["n_y"], replace=False)
    asin = [f"DX{i:08d}" for i in range(n_x)] + [f"DY{i:08d}" for i in range(sz["n_y"])]
    scn = Scenario(
        items_x=ItemTable([str(o) for o in original[:n_x]], asin[:n_x]),
        items_y=ItemTable([str(o) for o in original[n_x:]], asin[n_x:]),
        users=[(f"DEMO{u:07d}", u) for u in range(n_users)],
        train=seqs["train"], valid=seqs["valid"], test=seqs["test"], name=f"demo-{size}-{seed}",
    )
    catalogue = [
        {"item": i, "domain": "XY"[items["domain"][i]], "asin": asin[i], "title": titles[i], "image": f"images/{i}.png"}
        for i in range(n_x + sz["n_y"])
    ]
    latents = {k: items[k] for k in ("domain", "cluster", "colour", "shape", "texture", "pop_rank")}
    latents["new"] = items["new"].astype(np.int64)
    latents["release"] = items["release"].round(4)
    info = _info(size, seed, sz, lat, proto, scn, latents)
    return Demo(scn, catalogue, latents, info, order)


def generate(size: str = "tiny", seed: int = 0) -> tuple[Scenario, list[dict]]:
    """The demo scenario and its catalogue rows (see ``build`` for the latents too)."""
    demo = build(size, seed)
    return demo.scenario, demo.catalogue


def _info(size, seed, sz, lat: Latent, proto: dict, scn: Scenario, latents: dict) -> dict:
    colours = list(COLOURS)
    return {
        "generator": "hafvt.data.demo",
        "note": NOTE,
        "size": size,
        "seed": seed,
        "sizes": sz,
        "domains": {"X": "movies (synthetic)", "Y": "books (synthetic)"},
        "latent": {
            "params": {k: v for k, v in lat.__dict__.items()},
            "clusters": [
                {"cluster": c, "colour": colours[proto["colour"][c]], "shape": SHAPES[proto["shape"][c]],
                 "texture": TEXTURES[proto["texture"][c]],
                 "words": [WORDS[w] for w in proto["words"][c]], "successors": proto["successors"][c].tolist(),
                 "share": round(float(proto["share"][c]), 4)}
                for c in range(lat.k)
            ],
            "per_item": "latent.json",
        },
        "signal": {split: planted_signal(scn, latents["cluster"], (split,)) for split in ("valid", "test")},
        "rare_items": rare_items(scn),
        "cold_targets": {split: cold_targets(scn, split) for split in ("valid", "test")},
    }


# --------------------------------------------------------------------------- checks


def planted_signal(scn: Scenario, cluster: np.ndarray, splits=("valid", "test"), last: int = 3) -> dict:
    """How well a line's target taste cluster is predicted from its history, against baselines.

    ``history``: the majority cluster of the last ``last`` history items (ties: the most recent);
    ``last_item``: the last history item's cluster; ``majority_class``: always the most common
    target cluster; ``chance``: 1/K."""
    cluster = np.asarray(cluster)
    k = int(cluster.max()) + 1
    hits = {"history": 0, "last_item": 0}
    targets = []
    for split in splits:
        seqs = scn.split(split)
        for i in range(len(seqs)):
            seq = cluster[seqs.sequence(i)]
            hist, target = seq[:-1][-last:], seq[-1]
            votes = np.bincount(hist, minlength=k) + np.isin(np.arange(k), hist[-1]) * 0.5
            hits["history"] += int(votes.argmax() == target)
            hits["last_item"] += int(hist[-1] == target)
            targets.append(target)
    n = len(targets)
    return {
        "lines": n,
        "history": hits["history"] / n,
        "last_item": hits["last_item"] / n,
        "majority_class": float(np.bincount(targets, minlength=k).max() / n),
        "chance": 1 / k,
    }


def rare_items(scn: Scenario, split: str = "train", at_most: int = 2) -> dict:
    """The share of items seen at most ``at_most`` times in ``split`` (and never)."""
    counts = np.bincount(scn.split(split).items, minlength=scn.n_items)
    return {"split": split, "at_most": at_most, "share": float((counts <= at_most).mean()), "never": float((counts == 0).mean())}


COLD_BUCKETS = ((0, 0, "0"), (1, 4, "1-4"), (5, 19, "5-19"), (20, None, "20+"))  # as the cold-item slice


def cold_targets(scn: Scenario, split: str = "test") -> dict:
    """Per target domain: lines, the share whose target never occurs in the train split, and the
    lines per bucket of the target's train occurrences (``COLD_BUCKETS``)."""
    counts = np.bincount(scn.train.items, minlength=scn.n_items)
    targets = scn.split(split).targets
    out = {}
    for d, name in enumerate("XY"):
        c = counts[targets[(targets >= scn.n_x) == bool(d)]]
        out[name] = {"lines": int(len(c)), "unseen": float((c == 0).mean()) if len(c) else 0.0,
                     "buckets": {label: int(((c >= lo) & (c <= (hi if hi is not None else np.inf))).sum())
                                 for lo, hi, label in COLD_BUCKETS}}
    return out


def load_latents(out_dir: str | Path) -> dict:
    """The per-item latent arrays written by ``write_demo``."""
    with open(Path(out_dir) / "latent.json", encoding="utf-8") as f:
        return {k: np.asarray(v) for k, v in json.load(f).items()}


# --------------------------------------------------------------------------- images


def _shape_masks(px: int) -> dict:
    """Boolean masks per (shape, scale), drawn once with PIL."""
    from PIL import Image, ImageDraw

    masks = {}
    for s, name in enumerate(SHAPES):
        for scale in range(3):
            r = px * (0.24 + 0.06 * scale)
            c = px / 2
            img = Image.new("L", (px, px), 0)
            d = ImageDraw.Draw(img)
            box = (c - r, c - r, c + r, c + r)
            if name == "circle":
                d.ellipse(box, fill=1)
            elif name == "square":
                d.rectangle((c - 0.85 * r, c - 0.85 * r, c + 0.85 * r, c + 0.85 * r), fill=1)
            elif name == "triangle":
                d.polygon([(c, c - r), (c + r, c + 0.8 * r), (c - r, c + 0.8 * r)], fill=1)
            elif name == "diamond":
                d.polygon([(c, c - r), (c + r, c), (c, c + r), (c - r, c)], fill=1)
            elif name == "ring":
                d.ellipse(box, fill=1)
                d.ellipse((c - 0.5 * r, c - 0.5 * r, c + 0.5 * r, c + 0.5 * r), fill=0)
            else:  # cross
                w = 0.35 * r
                d.rectangle((c - r, c - w, c + r, c + w), fill=1)
                d.rectangle((c - w, c - r, c + w, c + r), fill=1)
            masks[s, scale] = np.asarray(img, dtype=bool)
    return masks


def _texture_masks(px: int) -> list[np.ndarray]:
    y, x = np.mgrid[0:px, 0:px]
    return [
        np.zeros((px, px), bool),
        (y // 4) % 2 == 1,
        ((x + y) // 4) % 2 == 1,
        ((x % 8) - 4) ** 2 + ((y % 8) - 4) ** 2 < 5,
        ((x // 8) + (y // 8)) % 2 == 1,
    ]


def _render_all(rng, latents: dict, px: int):
    """Yield (item, PNG bytes): the item's shape in its colour, textured, on its domain's background."""
    from PIL import Image

    n = len(latents["cluster"])
    shapes, textures = _shape_masks(px), _texture_masks(px)
    palette = np.array(list(COLOURS.values()), float)
    colour = np.clip(palette[latents["colour"]] + rng.normal(0, 14, (n, 3)), 0, 255)
    background = np.array([[236, 238, 240], [250, 243, 226]], float)[latents["domain"]] + rng.integers(-6, 7, (n, 3))
    scale, shift, phase = rng.integers(0, 3, n), rng.integers(-5, 6, (n, 2)), rng.integers(0, 8, (n, 2))
    for i in range(n):
        mask = np.roll(shapes[latents["shape"][i], scale[i]], tuple(shift[i]), axis=(0, 1))
        tex = np.roll(textures[latents["texture"][i]], tuple(phase[i]), axis=(0, 1))
        img = np.empty((px, px, 3), np.uint8)
        img[:] = background[i]
        img[mask & ~tex] = colour[i]
        img[mask & tex] = colour[i] * 0.55
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        yield i, buf.getvalue()


def _write_images(out: Path, latents: dict, seed: int, px: int) -> None:
    """Write ``images/<id>.png`` into a staging folder, then swap it in as a whole."""
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".images."))
    try:
        for i, png in _render_all(_rng(seed, 8), latents, px):
            (stage / f"{i}.png").write_bytes(png)
        final = out / "images"
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=out, prefix=".images-old."))
            os.replace(final, old / "images")
            shutil.rmtree(old)
        os.replace(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- writing


def _in_file_order(seqs: Sequences, perm: np.ndarray) -> Sequences:
    """The same lines with tokens in the order they are written (not time order: only for writing)."""
    return Sequences(seqs.uid, seqs.sample_id, seqs.offsets, seqs.items[perm], seqs.ts[perm], seqs.dates[perm])


def write_demo(out_dir: str | Path, size: str = "tiny", seed: int = 0, images: bool | None = None) -> Path:
    """Generate and write the demo: the C2DSR files, ``catalogue.jsonl``, ``images/``, ``latent.json``
    and ``demo.json``. ``images=None`` follows the size's default. Same seed, same bytes."""
    from hafvt.data.catalogue import write_catalogue

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demo = build(size, seed)
    images = SIZES[size]["images"] if images is None else images
    scn = demo.scenario
    on_disk = Scenario(scn.items_x, scn.items_y, scn.users,
                       **{split: _in_file_order(scn.split(split), perm) for split, perm in demo.file_order.items()})
    write_scenario(on_disk, out)
    if images:
        _write_images(out, demo.latents, seed, Latent().image_px)
    elif (out / "images").exists():
        shutil.rmtree(out / "images")
    write_catalogue(out, [dict(row, image=row["image"] if images else None) for row in demo.catalogue])
    latent_text = json.dumps({k: v.tolist() for k, v in demo.latents.items()}, separators=(",", ":"))
    atomic_write_text(out / "latent.json", latent_text + "\n")
    atomic_write_json(out / "demo.json", dict(demo.info, images=bool(images)))
    return out
