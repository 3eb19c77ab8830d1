"""The adaptive page size's rule (syncflow.engine.batch_size), page by page.

The fetch here returns at once (microseconds); the page time is driven by the store seconds
each test reports, so every step is decided by numbers, not by the machine's speed.
"""

from __future__ import annotations

from syncflow.engine.batch_size import AdaptiveBatch, AdaptiveBounds


def _sizer(size: int = 500, lo: int = 100, hi: int = 4000, target: float = 1.0) -> AdaptiveBatch:
    return AdaptiveBatch(size, AdaptiveBounds(lo, hi, target))


def _page(sizer: AdaptiveBatch, after: int, *, rows: int | None = None, store: float) -> int:
    """Fetch (instantly) the page after ``after`` at the current size, then report its store time."""
    count = sizer.size
    sizer.timed(lambda a, n: None)(after, count)
    return sizer.observe(after=after, rows=count if rows is None else rows, store_seconds=store)


def test_a_fast_full_page_doubles_the_size_up_to_the_maximum() -> None:
    s = _sizer()
    assert [_page(s, i, store=0.01) for i in range(5)] == [1000, 2000, 4000, 4000, 4000]
    assert (s.smallest, s.largest) == (500, 4000)


def test_a_slow_page_halves_the_size_down_to_the_minimum() -> None:
    s = _sizer(target=0.5)
    assert [_page(s, i, store=30.0) for i in range(4)] == [250, 125, 100, 100]
    assert (s.smallest, s.largest) == (100, 500)


def test_the_size_moves_by_the_ratio_between_the_bounds_of_one_step() -> None:
    s = _sizer(size=1000, target=1.0)
    assert _page(s, 0, store=0.625) == 1600  # 1.6x faster than the target: 1.6x larger
    assert _page(s, 1, store=2.0) == 800  # 2x slower: /2
    assert _page(s, 2, store=4.0) == 400  # 4x slower: still /2 (one step at most)


def test_near_the_target_the_size_stays() -> None:
    s = _sizer(target=1.0)
    assert [_page(s, i, store=t) for i, t in enumerate((0.85, 1.0, 1.2))] == [500, 500, 500]


def test_a_short_fast_page_does_not_grow_the_size_but_a_short_slow_one_shrinks_it() -> None:
    s = _sizer(target=1.0)
    assert _page(s, 0, rows=10, store=0.01) == 500  # the end of the source says nothing about a full page
    assert _page(s, 1, rows=10, store=5.0) == 250


def test_a_page_asked_at_an_older_size_or_never_timed_is_ignored() -> None:
    s = _sizer()
    fetch = s.timed(lambda a, n: None)
    fetch(0, 500)
    fetch(500, 500)  # prefetched before the size changed
    assert s.observe(after=0, rows=500, store_seconds=0.01) == 1000
    assert s.observe(after=500, rows=500, store_seconds=0.01) == 1000  # asked at 500: no second doubling
    assert s.observe(after=99, rows=500, store_seconds=0.01) == 1000  # never fetched through the sizer


def test_the_start_is_clamped_into_the_bounds() -> None:
    assert _sizer(size=50).size == 100
    assert _sizer(size=9000).size == 4000
