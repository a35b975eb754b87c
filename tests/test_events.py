"""The event schema: what is accepted, and the reason given for what is not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrec.data.events import Event, parse_event
from crossrec.errors import EventError
from crossrec.stream.events import read_event_lines

GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "domain": "films",
    "event_type": "view",
    "timestamp": 1_700_000_000.5,
}
DOMAINS = {"books", "films"}


def test_a_valid_event_round_trips_through_json() -> None:
    event = parse_event(json.dumps(GOOD), domains=DOMAINS)
    assert event == Event(**GOOD)
    assert parse_event(event.to_json(), domains=DOMAINS) == event


def test_integer_ids_are_kept_as_their_text() -> None:
    event = parse_event(json.dumps({**GOOD, "user_id": 42, "item_id": 7}))
    assert (event.user_id, event.item_id) == ("42", "7")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "item_id"}), "missing field 'item_id'"),
        (json.dumps({**GOOD, "timestamp": "yesterday"}), "field 'timestamp': must be a number"),
        (json.dumps({**GOOD, "user_id": True}), "field 'user_id': must be a string or an integer"),
        (json.dumps({**GOOD, "user_id": ""}), "field 'user_id': user_id must not be empty"),
        (json.dumps({**GOOD, "event_type": "like"}), "field 'event_type'"),
        (json.dumps({**GOOD, "event_type": "rating"}), "a rating event needs a value"),
        (json.dumps({**GOOD, "domain": "games"}), "field 'domain': unknown domain 'games'"),
        (json.dumps({**GOOD, "colour": "red"}), "unknown field 'colour'"),
        (json.dumps({**GOOD, "schema_version": 2}), "unsupported version 2"),
        (json.dumps({**GOOD, "timestamp": -5}), "timestamp must be positive"),
        (json.dumps({**GOOD, "value": float("nan")}).replace("NaN", '"NaN"'), "field 'value'"),
        (json.dumps({**GOOD, "item_id": "x" * 300}), "longer than 256"),
    ],
)
def test_invalid_events_name_what_is_wrong(raw: bytes | str, reason: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(raw, domains=DOMAINS)
    assert reason in info.value.reason


def test_oversized_and_future_events_are_refused() -> None:
    big = json.dumps({**GOOD, "item_id": "y" * 200}).encode()
    with pytest.raises(EventError, match="bytes, more than the 100 allowed"):
        parse_event(big, max_bytes=100)
    with pytest.raises(EventError, match="in the future"):
        parse_event(json.dumps(GOOD), max_future_skew_s=60, now=GOOD["timestamp"] - 3600)
    with pytest.raises(EventError, match="empty record"):
        parse_event(None)


def test_error_carries_where_the_record_came_from() -> None:
    err = EventError("missing field 'user_id'", topic="events", partition=2, offset=17)
    assert str(err) == "events[2] offset 17: missing field 'user_id'"
    import pickle

    again = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert (again.topic, again.partition, again.offset) == ("events", 2, 17)


def test_event_lines_skip_blanks_and_keep_line_numbers(tmp_path: Path) -> None:
    lines = ["", json.dumps(GOOD), "   ", "{bad"]
    assert list(read_event_lines(lines)) == [(2, json.dumps(GOOD)), (4, "{bad")]
