"""The paper check: our functions reproduce the published relative improvements and per-type relation."""
import math

import numpy as np
import pytest

from paraqa_utils import stats

PAPER = {"S10": 41.00, "S20": 52.06, "S30": 56.75, "S32": 59.87}
PAPER_TYPES = {"S10": {"C": 44.86, "CE": 37.56, "CG": 49.77}, "S30": {"C": 60.29, "CE": 53.86, "CG": 63.86}}


def test_relative_improvements_match_the_paper():
    got = {k: round(stats.relative_improvement(PAPER[k], PAPER["S10"]), 2) for k in ("S20", "S30", "S32")}
    assert got == {"S20": 26.98, "S30": 38.41, "S32": 46.02}
    with pytest.raises(ZeroDivisionError):
        stats.relative_improvement(1.0, 0.0)


def test_per_type_numbers_imply_micro_not_macro():
    # macro over types would give ~44.06 and ~59.34: not the published overall scores
    for system in ("S10", "S30"):
        means = PAPER_TYPES[system]
        macro = stats.macro_mean({k: [v] for k, v in means.items()})
        assert abs(macro - PAPER[system]) > 2.0
    # one set of item shares (the test set's type mix) explains both systems' overall micro means
    shares = stats.type_shares({k: (PAPER[k], PAPER_TYPES[k]) for k in ("S10", "S30")})
    assert abs(shares["C"] - 0.16) < 0.03 and abs(shares["CE"] - 0.65) < 0.03 and abs(shares["CG"] - 0.19) < 0.03
    counts = {k: round(v * 2647) for k, v in shares.items()}
    for system in ("S10", "S30"):
        assert abs(stats.micro_from_types(PAPER_TYPES[system], counts) - PAPER[system]) < 0.05


def test_micro_and_macro_differ_on_unbalanced_types():
    by_type = {"C": [100.0], "CE": [0.0, 0.0, 0.0]}
    assert stats.micro_mean([s for v in by_type.values() for s in v]) == 25.0
    assert stats.macro_mean(by_type) == 50.0


def test_bootstrap_ci_covers_a_known_effect_and_permutation_detects_it():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 6, 400) * 20.0
    better = np.clip(base + rng.choice([0, 20], 400, p=[0.6, 0.4]), 0, 100)
    res = stats.paired_bootstrap(base, better, 2000, seed=0)
    assert res["ci_low"] < res["rel_improvement_pct"] < res["ci_high"]
    assert res["ci_low"] > 0
    assert stats.paired_permutation_p(base, better, 2000) < 0.01
    assert stats.paired_permutation_p(base, base.copy(), 2000) == 1.0
    noise = base + rng.choice([-20, 20], 400)
    assert stats.paired_permutation_p(base, noise, 2000) > 0.01


def test_single_item_has_no_ci_but_no_crash():
    res = stats.paired_bootstrap([40.0], [60.0])
    assert res["ci_low"] is None and "no confidence interval" in res["note"]
    assert math.isclose(res["rel_improvement_pct"], 50.0)
    assert stats.paired_permutation_p([1.0], [2.0]) is None
    with pytest.raises(ValueError, match="same items"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])


def test_classification_scores():
    y = ["sad", "sad", "sad", "happy"]
    p = ["sad", "sad", "sad", None]
    s = stats.classification_scores(y, p)
    assert s["wa"] == 0.75 and s["ua"] == 0.5
    assert math.isclose(s["macro_f1"], (2 * 3 / (6 + 0 + 0) + 0) / 2)
