"""common.stats: CI coverage on simulated data with known truth, verdict thresholds, accuracy tests."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from dualbench.common.stats import (compare_means, mean_ci, median_ci, median_ci_rank, paired_ratio_ci, verdict)

SIMS = 2000
# 2000 simulations: the standard error of an estimated 95% coverage is 0.005; +-0.02 is 4 SE.
TOL = 0.02


def test_median_rank_is_the_largest_with_exact_coverage():
    assert median_ci_rank(5) is None            # 1 - 2/32 = 0.9375 < 0.95: no 95% interval exists
    assert median_ci_rank(6) == 1               # [min, max]: 1 - 2/64 = 0.969
    for n in range(6, 60):
        k = median_ci_rank(n)
        coverage = 1 - 2 * sps.binom.cdf(k - 1, n, 0.5)
        assert coverage >= 0.95
        assert 1 - 2 * sps.binom.cdf(k, n, 0.5) < 0.95     # one rank further in would fall short


def test_median_ci_covers_the_true_median():
    rng = np.random.default_rng(1)
    true_median = 100.0          # lognormal with median 100 and heavy right tail, like step times
    hits = 0
    for _ in range(SIMS):
        x = true_median * np.exp(rng.normal(0, 0.3, 10))
        _, lo, hi = median_ci(x)
        hits += lo <= true_median <= hi
    coverage = hits / SIMS
    assert 0.95 - TOL <= coverage <= 0.99 + TOL    # exact method: >= 97.9% nominal at n=10


def test_median_ci_too_few_values_gives_no_interval():
    med, lo, hi = median_ci([3.0, 1.0, 2.0])
    assert med == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in median_ci([]))


@pytest.mark.parametrize("n_pairs", [4, 6, 10])
def test_paired_ratio_t_interval_coverage(n_pairs):
    """Known ratio 0.8; each pair shares a machine-drift factor, plus independent noise per run."""
    rng = np.random.default_rng(n_pairs)
    true_ratio = 0.8
    hits = 0
    for _ in range(SIMS):
        drift = np.exp(rng.normal(0, 0.2, n_pairs))           # hits both members of a pair
        a = 1000 * true_ratio * drift * np.exp(rng.normal(0, 0.03, n_pairs))
        b = 1000 * drift * np.exp(rng.normal(0, 0.03, n_pairs))
        r = paired_ratio_ci(a, b)
        hits += r["lo"] <= true_ratio <= r["hi"]
    assert abs(hits / SIMS - 0.95) <= TOL


def test_paired_ratio_bootstrap_coverage_with_many_pairs():
    rng = np.random.default_rng(7)
    true_ratio, hits, sims = 1.3, 0, 1000
    for i in range(sims):
        drift = np.exp(rng.normal(0, 0.2, 40))
        a = true_ratio * drift * np.exp(rng.normal(0, 0.05, 40))
        b = drift * np.exp(rng.normal(0, 0.05, 40))
        r = paired_ratio_ci(a, b, method="bootstrap", n_boot=1000, seed=i)
        hits += r["lo"] <= true_ratio <= r["hi"]
    assert abs(hits / sims - 0.95) <= 0.025   # 1000 sims: SE 0.007; percentile bootstrap runs ~1% low at n=40


def test_pairing_cancels_common_drift():
    """Large drift shared within pairs: the paired CI stays narrow, as it must for interleaved repeats."""
    rng = np.random.default_rng(3)
    drift = np.exp(rng.normal(0, 0.5, 8))
    a = 2.0 * drift * np.exp(rng.normal(0, 0.01, 8))
    b = drift * np.exp(rng.normal(0, 0.01, 8))
    r = paired_ratio_ci(a, b)
    assert r["lo"] <= 2.0 <= r["hi"]
    assert r["hi"] / r["lo"] < 1.05
    unpaired_spread = np.std(np.log(a)) + np.std(np.log(b))
    assert unpaired_spread > 0.5                  # an unpaired analysis would see the drift


def test_paired_ratio_edge_cases():
    r = paired_ratio_ci([2.0], [1.0])
    assert r["ratio"] == pytest.approx(2.0) and math.isnan(r["lo"]) and r["n"] == 1
    r = paired_ratio_ci([2.0, np.nan, 4.0, -1.0], [1.0, 1.0, 2.0, 1.0])   # missing / non-positive pairs dropped
    assert r["n"] == 2 and r["ratio"] == pytest.approx(2.0)
    assert r["lo"] == pytest.approx(2.0) and r["hi"] == pytest.approx(2.0)   # zero spread
    assert paired_ratio_ci([], [])["n"] == 0
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_ratio_ci([1.0, 2.0], [1.0, 2.0], method="magic")


@pytest.mark.parametrize("lo,hi,expected", [
    (1.06, 1.20, "faster"), (1.051, 1.06, "faster"),
    (0.80, 0.94, "slower"), (0.90, 0.949, "slower"),
    (0.96, 1.04, "same"), (0.95, 1.05, "same"),            # the band's edges count as inside
    (0.97, 1.08, "inconclusive"),                          # straddles 1.05: maybe faster, maybe same
    (0.93, 1.02, "inconclusive"), (0.90, 1.10, "inconclusive"),
    (1.01, 1.07, "inconclusive"),                          # faster than 1, but not shown beyond the band
    (float("nan"), 1.0, "n/a"), (None, None, "n/a"),
])
def test_verdict_thresholds(lo, hi, expected):
    assert verdict(lo, hi) == expected


def test_verdict_band_is_a_parameter():
    assert verdict(1.03, 1.04, band=0.02) == "faster"
    assert verdict(1.03, 1.04) == "same"


def test_mean_ci_matches_student_t():
    x = np.array([0.91, 0.93, 0.92, 0.95, 0.90])
    mean, lo, hi = mean_ci(x)
    ref = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
    assert mean == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(ref)
    assert math.isnan(mean_ci([0.9])[1])


def test_compare_means_welch_and_paired():
    a = np.array([0.912, 0.915, 0.909, 0.918, 0.911])
    b = np.array([0.902, 0.907, 0.899, 0.910, 0.903])
    out = compare_means(a, b, pairs=list(zip(a, b)))
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert out["p_welch"] == pytest.approx(ref.pvalue)
    assert out["p_paired"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert out["lo"] < out["diff"] < out["hi"]
    assert out["lo"] > 0                       # a real difference of ~0.009 is detected
    one = compare_means([0.9], [0.8])
    assert one["diff"] == pytest.approx(0.1) and math.isnan(one["p_welch"]) and math.isnan(one["p_paired"])


def test_compare_means_false_positive_rate():
    """Same distribution for both backends: the Welch test says 'differ' about 5% of the time."""
    rng = np.random.default_rng(11)
    rejections = sum(compare_means(rng.normal(0.9, 0.01, 5), rng.normal(0.9, 0.01, 5))["p_welch"] < 0.05
                     for _ in range(SIMS))
    assert rejections / SIMS <= 0.05 + TOL      # Welch is slightly conservative with equal variances
    assert rejections / SIMS >= 0.02


def test_pairs_needed_is_the_stein_second_stage_size():
    from dualbench.common.stats import pairs_needed, ratio_halfwidth
    d = np.log([1.90, 1.95, 1.80, 2.10, 1.85, 2.00])
    half = sps.t.ppf(0.975, 5) * d.std(ddof=1)
    assert pairs_needed(d, 0.03, 100) == math.ceil((half / math.log(1.03)) ** 2)
    assert pairs_needed(d, 0.03, 10) == 10                       # capped
    assert pairs_needed(np.log([2.0, 2.0, 2.0]), 0.03, 40) == 3  # no spread: nothing more to run
    assert pairs_needed([0.1], 0.03, 40) is None                 # one pair has no spread estimate
    ci = paired_ratio_ci(np.exp(d), np.ones(6))
    assert ratio_halfwidth(ci["ratio"], ci["lo"], ci["hi"]) == pytest.approx(ci["hi"] / ci["ratio"] - 1)
    assert math.isnan(ratio_halfwidth(2.0, math.nan, 2.1))


@pytest.mark.parametrize("sd", [0.02, 0.04, 0.08])
def test_two_stage_design_reaches_the_width_and_keeps_coverage(sd):
    """The bench's second stage on simulated pairs with a known ratio: first 6 pairs, then the pairs
    pairs_needed asks for (cap 40), CI over all. Coverage stays near 95% (decided from the first stage
    only; stopping at the first narrow CI instead would pick chance-narrow ones) and the CI mostly
    reaches +-3% where the cap allows it."""
    from dualbench.common.stats import pairs_needed, ratio_halfwidth
    rng = np.random.default_rng(7)
    true_ratio, hits, reached, n_total = 1.7, 0, 0, []
    for _ in range(SIMS):
        d = np.log(true_ratio) + rng.normal(0, sd, 6)
        n = pairs_needed(d, 0.03, 40)
        d = np.concatenate([d, np.log(true_ratio) + rng.normal(0, sd, n - 6)])
        ci = paired_ratio_ci(np.exp(d), np.ones(d.size))
        hits += ci["lo"] <= true_ratio <= ci["hi"]
        reached += ratio_halfwidth(ci["ratio"], ci["lo"], ci["hi"]) <= 0.03
        n_total.append(d.size)
    assert hits / SIMS >= 0.95 - 2.5 * TOL        # measured 0.93-0.95 over these noise levels
    if sd <= 0.04:                               # the cap of 40 pairs is enough for this noise
        assert reached / SIMS >= 0.85
    assert min(n_total) >= 6 and max(n_total) <= 40
