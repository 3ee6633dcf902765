"""Timing helpers shared by the benchmark scripts."""
import time


def time_pair(fa, fb, min_time: float, min_reps: int = 5):
    """Seconds per call of `fa` and `fb`, timed alternately (so both see the same machine load) after one warm-up
    call each; the minimum over the repeats, the usual estimate of the cost without interference from other processes."""
    fa(); fb()
    ta, tb, start = [], [], time.perf_counter()
    while len(ta) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter(); fa(); t1 = time.perf_counter(); fb(); t2 = time.perf_counter()
        ta.append(t1 - t0); tb.append(t2 - t1)
    return min(ta), min(tb), len(ta)
