"""Feature specs: every range is checked against the width and the cap before any list is built."""

import time
import tracemalloc

import pytest

from vit_feature_viz import VizError
from vit_feature_viz.specs import parse_features

HUGE = [
    (("0-99999999999", 128), "Feature 128 is out of range: this layer has 128 features, use 0-127."),
    (("0-99999999999",), "Feature 1048576 is out of range"),
    (("0-30000000", 3072, 0, 64), "Feature 3072 is out of range"),
    (("all", 3072, 0, 64), "3072 features asked for, more than the 64 allowed per request"),
    (("0-63,100-199", 3072, 0, 64), "164 features asked for, more than the 64 allowed"),
    (("random 100", 3072, 0, 64), "more than the 64 allowed per request: use random 64 or fewer"),
    ((range(10**12), 128), "Feature 128 is out of range"),
    ((iter(range(10**12)), None, 0, 64), "more than the 64 allowed"),
]


@pytest.mark.parametrize("args,message", HUGE, ids=[str(a[0])[:20] for a, _ in HUGE])
def test_huge_specs_fail_fast_in_little_memory(args, message):
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(VizError) as err:
        parse_features(*args)
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert took < 0.5 and peak < 1_000_000, (took, peak)


@pytest.mark.parametrize("spec", ["2.5", 2.5, [1, 2.5], "1-2.5", "1e3", "0x10", True])
def test_fractions_and_other_numbers_are_refused_not_truncated(spec):
    with pytest.raises(VizError, match="not a whole number|Cannot read feature spec"):
        parse_features(spec, 128)


def test_valid_specs_still_parse():
    assert parse_features("0-3, 2-5,9", 128) == [0, 1, 2, 3, 4, 5, 9]
    assert parse_features("all", 8, max_count=8) == list(range(8))
    assert parse_features(range(3, 6), 128) == [3, 4, 5] and parse_features([5, 5, 1.0], 128) == [1, 5]
    assert parse_features(7.0, 10) == [7] and parse_features("random 3", 128, seed=3) == parse_features("random 3", 128, seed=3)
    assert len(parse_features("random 64", 3072, max_count=64)) == 64
