"""The gap ledger's store functions and policy, and the seq server's late mode, piece by piece."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import Engine, select

from syncflow.engine.gaps import GapPolicy, group_holes
from syncflow.engine.options import SyncOptions
from syncflow.errors import ConfigError
from syncflow.sources.http_seq import SeqHttpClient
from syncflow.store import gaps as ledger
from syncflow.store import instances as inst_svc
from syncflow.store.db import session_scope
from syncflow.store.models import Message, SeqGap
from syncflow.testing.seqserver import SeqServer

SEQ_MAX = 2**63 - 1


def _instance(engine: Engine) -> int:
    with session_scope(engine) as s:
        return inst_svc.add_instance(s, name="im-1", kind="http-seq").id


def test_record_holes_skips_holes_already_covered_and_keeps_bigint_seqs(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        assert ledger.record_holes(
            s, instance_id=iid, category="messages", holes=[(5, 7), (SEQ_MAX - 3, SEQ_MAX - 1)]
        ) == [(5, 7), (SEQ_MAX - 3, SEQ_MAX - 1)]
    with session_scope(engine) as s:  # a full re-sync sees (6, 7) and a new (20, 20): only the new one
        assert ledger.record_holes(s, instance_id=iid, category="messages", holes=[(6, 7), (20, 20)]) == [(20, 20)]
    with session_scope(engine) as s:
        rows = s.execute(select(SeqGap.from_seq, SeqGap.to_seq, SeqGap.status).order_by(SeqGap.from_seq)).all()
        assert [tuple(r) for r in rows] == [
            (5, 7, "open"),
            (20, 20, "open"),
            (SEQ_MAX - 3, SEQ_MAX - 1, "open"),
        ]
        assert ledger.gap_counts(s, instance_id=iid) == {
            "open": 3,
            "filled": 0,
            "partly_filled": 0,
            "confirmed_empty": 0,
        }
        assert ledger.open_width(s, instance_id=iid, category="messages", after=6, upto=SEQ_MAX) == (
            3,
            1 + 1 + 3,
        )  # (5, 7) clipped to 7


def test_stored_split_counts_a_range_and_its_read_part_in_one_statement(engine: Engine) -> None:
    iid = _instance(engine)
    with session_scope(engine) as s:
        other = inst_svc.add_instance(s, name="im-2", kind="http-seq").id
        seqs = [1, 2, 3, 5, 8, 9, SEQ_MAX - 1, SEQ_MAX]
        s.add_all(Message(instance_id=iid, message_id=f"m{q}", seq=q) for q in seqs)
        s.add_all(Message(instance_id=other, message_id=f"m{q}", seq=q) for q in range(1, 20))
    with session_scope(engine) as s:
        # (2, 9]: 3, 5, 8, 9; of those <= 5: 3, 5 (the other instance's rows never count)
        assert ledger.stored_split(s, instance_id=iid, after=2, upto=5, to=9) == (4, 2)
        assert ledger.stored_split(s, instance_id=iid, after=0, upto=0, to=3) == (3, 0)
        assert ledger.stored_split(s, instance_id=iid, after=9, upto=9, to=9) == (0, 0)  # an empty range
        assert ledger.stored_split(s, instance_id=iid, after=4, upto=7, to=SEQ_MAX) == (5, 1)
        assert ledger.stored_split(s, instance_id=iid, after=SEQ_MAX - 2, upto=SEQ_MAX, to=SEQ_MAX) == (2, 2)
        assert ledger.stored_split(s, instance_id=iid, after=100, upto=150, to=200) == (0, 0)  # none stored


def test_a_failed_page_transaction_records_no_hole(engine: Engine) -> None:
    iid = _instance(engine)
    with pytest.raises(RuntimeError):
        with session_scope(engine) as s:
            ledger.record_holes(s, instance_id=iid, category="messages", holes=[(5, 7)])
            raise RuntimeError("the page's transaction fails")
    with session_scope(engine) as s:
        assert ledger.list_gaps(s) == []


def _gap(a: int, b: int) -> ledger.Gap:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return ledger.Gap(a, 1, "messages", a, b, now, None, 0, "open", 0)


def test_neighbouring_holes_share_a_read_while_the_messages_between_fit_half_a_page() -> None:
    holes = [_gap(10, 10), _gap(20, 22), _gap(200, 200), _gap(10_000, 2**62)]
    groups = group_holes(holes, 100)  # budget: 50 stored messages between holes
    assert [[g.from_seq for g in group] for group in groups] == [[10, 20], [200], [10_000]]
    assert len(group_holes(holes, 1000)) == 2  # 177 + 9 between the first three: one read


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gap_window_hours": -1}, "gap_window_hours must be a number >= 0"),
        ({"gap_checks": 0}, "gap_checks must be an integer >= 1"),
        ({"gap_max_reads": "many"}, "gap_max_reads must be an integer >= 1"),
        ({"gap_checks": True}, "gap_checks must be an integer >= 1"),
    ],
)
def test_bad_gap_options_are_one_clear_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyncOptions.parse(options, instance="im-1")
    with pytest.raises(ConfigError, match=message):
        GapPolicy.of(options, instance="im-1")


def test_gap_policy_takes_run_options_before_the_instance_config() -> None:
    p = GapPolicy.of({"gap_checks": 5}, {"gap_checks": 2, "gap_window_hours": 1.5}, instance="im-1")
    assert (p.checks, p.window, p.max_reads) == (5, dt.timedelta(hours=1.5), 20)
    assert SyncOptions.parse({"gapWindowHours": 6}).gap_window_hours == 6


def test_seq_server_late_mode_hides_then_shows_messages() -> None:
    with SeqServer(messages=20, token="t", late_rate=0.0) as server:
        client = SeqHttpClient(server.url, "t")
        assert server.hide_messages([5, 6], reads=2) == 2
        page = client.fetch_page(0, 100)
        assert [r[2] for r in page.rows] == [1, 2, 3, 4, *range(7, 21)]
        assert (page.total_count, page.max_seq) == (18, 20)
        assert server.late_seqs() == [5, 6]
        client.fetch_page(0, 100)  # the second request after hiding: they show after it
        assert server.late_seqs() == []
        assert [r[2] for r in client.fetch_page(4, 2).rows] == [5, 6]

        server.hide_messages([10])  # reads=0 (the server's default): only a release shows it
        for _ in range(3):
            client.fetch_page(0, 1)
        assert server.late_seqs() == [10]
        headers = {"Authorization": "Bearer t"}
        assert httpx.get(server.url + "/_admin/state", headers=headers).json()["late"] == 1
        released = httpx.post(server.url + "/_admin/release", headers=headers, json={"seqs": [10, 99]}).json()
        assert released == {"released": [10], "late": 0}
        assert server.seqs() == list(range(1, 21))

        added = server.append(10)  # after the highest seq allocated, late ones included
        assert added == list(range(21, 31))


def test_seq_server_late_rate_takes_seqs_and_serves_them_later() -> None:
    with SeqServer(messages=2_000, token="t", seed=4, late_rate=0.05) as server:
        late = server.late_seqs()
        assert 50 <= len(late) <= 150
        assert not set(late) & set(server.seqs())
        assert sorted(set(late) | set(server.seqs())) == list(range(1, 2_001))
        assert server.release_late() == late
        assert server.message_count == 2_000
