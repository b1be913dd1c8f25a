"""Statistics for paired benchmarks and accuracy comparisons (numpy; scipy for t and test p-values).

Choices, and why:
- Throughput of one backend: the **median** (robust to a slow window or repeat on a shared machine) with
  a distribution-free 95% CI from order statistics (binomial, exact coverage >= 95% for any continuous
  distribution). It needs at least 6 values; with fewer, no 95% interval exists and we say so (NaN).
- Speed ratio torch/paddle: the repeats are interleaved pairs (torch and paddle run back to back), so
  machine drift hits both members of a pair alike. We analyse the **per-pair log ratio**
  d_r = log(torch_r) - log(paddle_r): the estimate is the geometric mean ratio exp(mean d) and the CI is
  the paired Student-t interval on d (the bioequivalence analysis of a geometric mean ratio). Logs make a
  ratio symmetric (1.1 and 1/1.1 are equally far from 1) and timing noise close to normal; the t interval
  is calibrated at the small numbers of pairs a benchmark can afford (5-10), where a percentile bootstrap
  undercovers. A bootstrap over pairs is available (method="bootstrap") for many pairs or odd tails.
- Precision target for the ratio (e.g. a CI within +-3%): a two-stage design (Stein). The first stage's
  pairs give the spread s of the log ratios; the second stage runs the pairs still missing for
  n = (t * s / log(1 + target))^2 in total, decided once from the first stage, never re-checked after
  every pair (stopping as soon as a CI looks narrow enough picks chance-narrow CIs and undercovers).
  The final CI is the usual paired t interval over all pairs; simulated coverage, tests/test_stats.py.
- Verdict, with an equivalence band of +-5% around 1 (the CI, not the point estimate, decides):
  faster (CI entirely above 1.05), slower (entirely below 0.95), same (CI entirely inside [0.95, 1.05],
  i.e. equivalence shown as in a two one-sided tests procedure), otherwise inconclusive (the CI
  straddles a band edge: more repeats would settle it). A point-estimate rule would call noise a verdict.
- Accuracy over seeds: mean with a Student-t 95% CI; backends compared with Welch's t-test (no equal
  variance assumed) and, when both have the same seeds, a paired t-test by seed (same batch order).
"""
import math

import numpy as np

LEVEL = 0.95
BAND = 0.05          # "same speed" means within +-5%
VERDICTS = ("faster", "same", "slower", "inconclusive", "n/a")


def _finite(values):
    x = np.asarray(values, dtype=float).ravel()
    return x[np.isfinite(x)]


def _t_quantile(level, df):
    from scipy import stats
    return float(stats.t.ppf(0.5 + level / 2, df))


def median_ci_rank(n, level=LEVEL):
    """1-based rank k so that [x_(k), x_(n+1-k)] covers the median with probability >= level; None if impossible.

    Coverage is 1 - 2 P(B <= k-1) with B ~ Binomial(n, 1/2); the largest such k. (scipy's binomial cdf, so
    that thousands of values, e.g. per-call inference latencies, neither overflow nor underflow.)
    """
    from scipy import stats
    if n < 1:
        return None
    k = int(stats.binom.ppf((1 - level) / 2, n, 0.5))   # smallest k with P(B <= k) >= (1 - level) / 2
    while k >= 1 and 1 - 2 * stats.binom.cdf(k - 1, n, 0.5) < level:
        k -= 1
    while k + 1 <= n // 2 and 1 - 2 * stats.binom.cdf(k, n, 0.5) >= level:
        k += 1
    return k if 1 <= k <= n // 2 else None


def median_ci(values, level=LEVEL):
    """(median, lo, hi) with the order-statistic CI; lo/hi are NaN when n is too small (n < 6 at 95%)."""
    x = np.sort(_finite(values))
    if x.size == 0:
        return math.nan, math.nan, math.nan
    k = median_ci_rank(x.size, level)
    med = float(np.median(x))
    if k is None:
        return med, math.nan, math.nan
    return med, float(x[k - 1]), float(x[x.size - k])


def quantile_ci(values, q, level=LEVEL):
    """(q-quantile, lo, hi) with the distribution-free order-statistic CI: ranks from Binomial(n, q), as
    median_ci does for q = 0.5. lo/hi are NaN when n is too small for the level (about 59 values for
    the 95th percentile's upper bound at 95%)."""
    from scipy import stats
    x = np.sort(_finite(values))
    if x.size == 0:
        return math.nan, math.nan, math.nan
    value = float(np.quantile(x, q))
    n, alpha = x.size, 1 - level
    lo_rank = int(stats.binom.ppf(alpha / 2, n, q))            # P(B < lo_rank) <= alpha/2
    hi_rank = int(stats.binom.ppf(1 - alpha / 2, n, q)) + 1    # P(B >= hi_rank) <= alpha/2
    if lo_rank < 1 or hi_rank > n:
        return value, math.nan, math.nan
    return value, float(x[lo_rank - 1]), float(x[hi_rank - 1])


def mean_ci(values, level=LEVEL):
    """(mean, lo, hi): Student-t interval; NaN bounds for fewer than 2 values."""
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = _t_quantile(level, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def paired_ratio_ci(a, b, level=LEVEL, method="t", n_boot=10000, seed=0):
    """Ratio a/b from paired positive measurements (a[i] and b[i] belong together).

    Returns {"ratio", "lo", "hi", "n", "method"}: the geometric mean of a[i]/b[i] and its CI, by a
    Student-t interval on the log ratios (method "t") or a percentile bootstrap over pairs ("bootstrap").
    Pairs with a missing or non-positive member are dropped; with fewer than 2 pairs the CI is NaN.
    """
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    d = np.log(a[keep]) - np.log(b[keep])
    n = int(d.size)
    out = {"ratio": math.nan, "lo": math.nan, "hi": math.nan, "n": n, "method": method}
    if n == 0:
        return out
    out["ratio"] = float(np.exp(d.mean()))
    if n < 2:
        return out
    if method == "t":
        half = _t_quantile(level, n - 1) * d.std(ddof=1) / math.sqrt(n)
        lo, hi = d.mean() - half, d.mean() + half
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    else:
        raise ValueError(f"unknown method {method!r} (t | bootstrap)")
    out["lo"], out["hi"] = float(np.exp(lo)), float(np.exp(hi))
    return out


def ratio_halfwidth(ratio, lo, hi):
    """Relative half-width of a ratio CI: the larger of hi/ratio - 1 and 1 - lo/ratio (0.03 means +-3%)."""
    if not all(v is not None and math.isfinite(v) and v > 0 for v in (ratio, lo, hi)):
        return math.nan
    return max(hi / ratio - 1, 1 - lo / ratio)


def pairs_needed(log_ratios, target, max_pairs, level=LEVEL):
    """Second stage of the two-stage design: total pairs for a ratio CI within +-target, from the
    first stage's log ratios (at least 2), between len(log_ratios) and max_pairs; None with fewer than 2.

    n = ceil((t_{n1-1} * s / log(1 + target))^2): the first stage's t quantile and spread s, so that a
    second stage of that size gives a CI of about the target width whatever the noise level.
    """
    d = _finite(log_ratios)
    if d.size < 2:
        return None
    return int(min(max_pairs, max(d.size, pairs_for_spread(d.std(ddof=1), d.size - 1, target))))


def pairs_for_spread(s, df, target, level=LEVEL):
    """ceil((t_df * s / log(1 + target))^2): the pairs a ratio CI within +-target needs at a per-pair spread s
    of the log ratios estimated with df degrees of freedom (at least 1; 0 spread: 1 pair)."""
    half = _t_quantile(level, df) * s
    return math.ceil((half / math.log1p(target)) ** 2) if half > 0 else 1


def log_spread(log_ratios):
    """Per-pair spread: the standard deviation (ddof 1) of the log ratios; 0.10 is about +-10% per pair. NaN
    with fewer than 2 values."""
    d = _finite(log_ratios)
    return float(d.std(ddof=1)) if d.size >= 2 else math.nan


def spread_and_pairs_needed(a, b, target, max_pairs, level=LEVEL):
    """(spread, needed) of paired positive values a[i], b[i]: the per-pair spread of their log ratios
    (log_spread) and the total pairs a ratio CI within +-target needs at that spread (pairs_needed, at most
    max_pairs); both NaN with fewer than 2 finite log ratios."""
    d = np.log(np.asarray(a, dtype=float)) - np.log(np.asarray(b, dtype=float))
    needed = pairs_needed(d, target, max_pairs, level)
    return log_spread(d), math.nan if needed is None else needed


def pooled_spread(samples):
    """(s, df): the spread pooled over several samples of log ratios, each around its own mean (their
    variances weighted by their degrees of freedom); samples with fewer than 2 values add nothing.
    (NaN, 0) when none has 2."""
    sums, df = 0.0, 0
    for values in samples:
        d = _finite(values)
        if d.size >= 2:
            sums += float(((d - d.mean()) ** 2).sum())
            df += d.size - 1
    return (math.sqrt(sums / df), df) if df else (math.nan, 0)


def spread_above(s, df, s0, df0, level=LEVEL):
    """True when a spread s (df degrees of freedom) is shown to exceed a reference spread s0 (df0): the
    one-sided F test of s^2 / s0^2 at `level`. With 4 and 16 df (5 pairs against the 4 x 4 df of four A/A
    configurations of 5 pairs) s must be above 1.73 s0; below that the pairs cannot tell the two apart."""
    from scipy import stats
    if not (df >= 1 and df0 >= 1 and math.isfinite(s) and math.isfinite(s0)) or s0 <= 0:
        return False
    return (s / s0) ** 2 > float(stats.f.ppf(level, df, df0))


def verdict(lo, hi, band=BAND):
    """faster | same | slower | inconclusive from a ratio CI and the +-band equivalence margin; n/a without a CI."""
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    if lo > 1 + band:
        return "faster"
    if hi < 1 - band:
        return "slower"
    if lo >= 1 - band and hi <= 1 + band:
        return "same"
    return "inconclusive"


def compare_means(a, b, level=LEVEL, pairs=None):
    """Compare two groups (e.g. test accuracy of torch vs paddle over seeds).

    Returns {"diff", "lo", "hi", "p_welch", "p_paired", "n_a", "n_b"}: diff = mean(a) - mean(b) with
    Welch's CI and p-value; p_paired from a paired t-test over `pairs` [(a_i, b_i), ...] when given
    (e.g. matched by seed) and at least 2 long. NaN where a test is impossible (too few values, or
    zero variance in both groups).
    """
    import warnings

    from scipy import stats
    warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)   # near-identical seeds are legit
    a, b = _finite(a), _finite(b)
    out = {"diff": math.nan, "lo": math.nan, "hi": math.nan, "p_welch": math.nan, "p_paired": math.nan,
           "n_a": int(a.size), "n_b": int(b.size)}
    if a.size and b.size:
        out["diff"] = float(a.mean() - b.mean())
    if a.size >= 2 and b.size >= 2:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = math.sqrt(va + vb)
        if se > 0:
            df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
            half = _t_quantile(level, df) * se
            out["lo"], out["hi"] = out["diff"] - half, out["diff"] + half
            out["p_welch"] = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if pairs is not None and len(pairs) >= 2:
        pa, pb = np.asarray(pairs, dtype=float).T
        d = pa - pb
        if np.all(np.isfinite(d)) and d.std(ddof=1) > 0:
            out["p_paired"] = float(stats.ttest_rel(pa, pb).pvalue)
    return out


def holm(p_values):
    """Holm's step-down adjustment of p-values (family-wise error over all of them); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out
