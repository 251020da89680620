"""Progress growth (predictor/progress.py): the normalisation, its edge cases, and reading Prometheus matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictor.progress import (MIN_WINDOW_POINTS, ProgressDataError, ProgressSeries, is_slow_growing,
                                normalised_growth, progress_query, series_from_prometheus_matrix)

NOW = 1_795_000_000.0
WINDOW = 1800.0
HISTORY = 3 * 3600.0
STEP = 60.0


def sample_times(history: float = HISTORY, step: float = STEP) -> np.ndarray:
    return np.arange(NOW - history, NOW + 1.0, step)


def test_a_job_improving_at_a_steady_pace_has_growth_one() -> None:
    times = sample_times()
    accuracy = 0.1 + 0.8 * (times - times[0]) / (times[-1] - times[0])
    growth = normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW)
    assert growth == pytest.approx(1.0)
    assert not is_slow_growing(growth, 0.1)


def test_a_job_whose_accuracy_has_flattened_is_slow_growing() -> None:
    times = sample_times()
    accuracy = 0.9 - 0.8 * np.exp(-(times - times[0]) / 900.0)
    growth = normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW)
    assert growth is not None and 0.0 < growth < 0.1
    assert is_slow_growing(growth, 0.1)


def test_a_falling_loss_counts_as_progress_only_when_the_direction_says_falling() -> None:
    times = sample_times()
    loss = 5.0 - 4.0 * (times - times[0]) / (times[-1] - times[0])
    series = ProgressSeries(times, loss)
    assert normalised_growth(series, WINDOW, "falling", NOW) == pytest.approx(1.0)
    assert normalised_growth(series, WINDOW, "rising", NOW) == pytest.approx(-1.0)


def test_a_metric_that_never_moved_has_growth_zero() -> None:
    times = sample_times()
    assert normalised_growth(ProgressSeries(times, np.full(times.shape, 0.42)), WINDOW, "rising", NOW) == 0.0


def test_a_job_that_regressed_recently_has_negative_growth() -> None:
    times = sample_times()
    accuracy = np.where(times < NOW - WINDOW, 0.1 + 0.7 * (times - times[0]) / (NOW - WINDOW - times[0]), 0.0)
    accuracy = np.where(times >= NOW - WINDOW, 0.8 - 0.2 * (times - (NOW - WINDOW)) / WINDOW, accuracy)
    growth = normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW)
    assert growth is not None and growth < 0
    assert is_slow_growing(growth, 0.1)


def test_a_window_with_too_few_samples_gives_no_verdict() -> None:
    times = np.array([NOW - 7200.0, NOW - 5400.0] + [NOW - 60.0 * i for i in range(MIN_WINDOW_POINTS - 1)])
    values = np.linspace(0.1, 0.2, times.size)
    growth = normalised_growth(ProgressSeries(times, values), WINDOW, "rising", NOW)
    assert growth is None
    assert not is_slow_growing(growth, 0.1)


def test_samples_after_now_and_non_finite_samples_are_ignored() -> None:
    times = sample_times()
    accuracy = 0.1 + 0.8 * (times - times[0]) / (times[-1] - times[0])
    clean = normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW)
    noisy_times = np.concatenate([times, [NOW + 60.0, NOW + 120.0, NOW - 30.0]])
    noisy_values = np.concatenate([accuracy, [0.0, 5.0, math.nan]])
    assert normalised_growth(ProgressSeries(noisy_times, noisy_values), WINDOW, "rising", NOW) == pytest.approx(clean)


def test_unsorted_samples_give_the_same_growth_as_sorted_ones() -> None:
    times = sample_times()
    accuracy = 0.9 - 0.8 * np.exp(-(times - times[0]) / 3600.0)
    order = np.random.default_rng(7).permutation(times.size)
    shuffled = ProgressSeries(times[order], accuracy[order])
    assert normalised_growth(shuffled, WINDOW, "rising", NOW) == pytest.approx(
        normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW))


def test_a_series_with_mismatched_arrays_is_rejected_with_a_reason() -> None:
    with pytest.raises(ProgressDataError, match="equal length"):
        ProgressSeries(np.arange(3.0), np.arange(4.0))


def test_a_bad_direction_or_window_is_rejected() -> None:
    series = ProgressSeries(sample_times(), np.zeros(sample_times().size))
    with pytest.raises(ValueError, match="direction"):
        normalised_growth(series, WINDOW, "sideways", NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window_s"):
        normalised_growth(series, 0.0, "rising", NOW)


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.001, 1000.0), shift=st.floats(-1000.0, 1000.0), tau=st.floats(300.0, 20000.0))
def test_growth_does_not_depend_on_the_metric_units(scale: float, shift: float, tau: float) -> None:
    times = sample_times()
    accuracy = 0.9 - 0.8 * np.exp(-(times - times[0]) / tau)
    base = normalised_growth(ProgressSeries(times, accuracy), WINDOW, "rising", NOW)
    rescaled = normalised_growth(ProgressSeries(times, scale * accuracy + shift), WINDOW, "rising", NOW)
    assert base is not None and rescaled is not None
    assert rescaled == pytest.approx(base, rel=1e-6, abs=1e-9)


def test_unknown_growth_is_never_slow_and_below_alpha_is() -> None:
    assert not is_slow_growing(None, 0.1)
    assert not is_slow_growing(math.nan, 0.1)
    assert is_slow_growing(0.099, 0.1)
    assert not is_slow_growing(0.1, 0.1)


def test_a_prometheus_matrix_becomes_one_series_per_job() -> None:
    result = [
        {"metric": {"job_name": "resnet50-train"},
         "values": [[NOW - 120, "0.5"], [NOW - 60, "NaN"], [NOW, "0.52"]]},
        {"metric": {"job_name": "bert-finetune"}, "values": [[NOW - 60.5, "2.5"], [NOW, "+Inf"]]},
        {"metric": {"instance": "no-job-label"}, "values": [[NOW, "1"]]},
    ]
    jobs = series_from_prometheus_matrix(result, "job_name")
    assert sorted(jobs) == ["bert-finetune", "resnet50-train"]
    assert jobs["resnet50-train"].times.tolist() == [NOW - 120, NOW]
    assert jobs["resnet50-train"].values.tolist() == [0.5, 0.52]
    assert jobs["bert-finetune"].values.tolist() == [2.5]


def test_a_malformed_prometheus_answer_is_rejected_with_the_element_named() -> None:
    with pytest.raises(ProgressDataError, match=r"result\[0\]"):
        series_from_prometheus_matrix([{"metric": {"job_name": "x"}, "value": [NOW, "1"]}], "job_name")
    with pytest.raises(ProgressDataError, match="job x"):
        series_from_prometheus_matrix([{"metric": {"job_name": "x"}, "values": [[NOW, "abc"]]}], "job_name")


def test_the_progress_query_aggregates_per_job_in_the_direction_of_progress() -> None:
    assert progress_query("guardgrid_training_progress", "job_name", "rising") == \
        "max by (job_name) (guardgrid_training_progress)"
    assert progress_query("train_loss", "job", "falling") == "min by (job) (train_loss)"
    with pytest.raises(ValueError, match="metric name"):
        progress_query("loss{evil=\"1\"}", "job_name", "falling")
    with pytest.raises(ValueError, match="label name"):
        progress_query("loss", "job-name", "falling")
