"""When a pipelined model returns from execute (trtrepo.backend.pacing; pure logic, no GPU)."""

from __future__ import annotations

import pytest

from trtrepo.backend.pacing import BatchPacer


def test_untimed_sizes_return_at_once():
    pacer = BatchPacer(handoff_s=0.002)
    assert pacer.return_at(128, launch_began=10.0) is None
    pacer.finished(128, gpu_seconds=None, at=10.5)  # a host batch: done, but not timed
    assert pacer.return_at(128, launch_began=11.0) is None


def test_returns_handoff_before_the_expected_end_counted_from_the_later_of_launch_and_gpu_free():
    pacer = BatchPacer(handoff_s=0.002)
    for end in (1.0, 1.01, 1.02):
        pacer.finished(128, gpu_seconds=0.010, at=end)
    # launched while the batch before still ran: it started when that one finished (1.02)
    assert pacer.return_at(128, launch_began=1.015) == pytest.approx(1.02 + 0.010 - 0.002)
    # launched on an idle GPU: it started at its launch
    assert pacer.return_at(128, launch_began=2.0) == pytest.approx(2.0 + 0.010 - 0.002)
    assert pacer.return_at(64, launch_began=2.0) is None  # other sizes have their own times


def test_expected_time_is_a_median_that_one_slow_batch_does_not_move_and_old_batches_leave():
    pacer = BatchPacer(handoff_s=0.0, timed_batches=3)
    for seconds in (0.010, 2.5, 0.012):  # the first batch of a size can include autotuning
        pacer.finished(256, gpu_seconds=seconds, at=0.0)
    assert pacer.return_at(256, launch_began=0.0) == pytest.approx(0.012)
    for seconds in (0.020, 0.020):  # the slow one and 0.010 drop out of the last three
        pacer.finished(256, gpu_seconds=seconds, at=0.0)
    assert pacer.return_at(256, launch_began=0.0) == pytest.approx(0.020)
