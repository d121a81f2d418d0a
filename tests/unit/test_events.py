"""Event contracts: strict parsing with readable reasons, canonical wire form, schema agreement."""

from __future__ import annotations

import ipaddress

import jsonschema
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.contracts.events import (
    SLICES,
    AccountRfm,
    Click,
    ModelControl,
    Purchase,
    Verdict,
    decode_entity_bundle,
    encode_entity_bundle,
    format_time,
    normalise_ip,
    parse_account_rfm,
    parse_click,
    parse_model_control,
    parse_purchase,
    parse_time,
    parse_verdict,
    slice_key,
)
from app.contracts.exceptions import InvalidEvent
from app.contracts.schemas import SCHEMA_DIR, all_schemas, render

T0 = 1_763_800_000_123  # 2025-11-22T08:26:40.123Z


def good_click(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "click_id": "c-1",
        "event_time": "2025-11-22T08:26:40.123Z",
        "ip": "192.0.2.7",
        "session_id": "s-1",
        "user_id": "u-1",
        "logged_in": True,
        "device_type": "mobile",
        "user_agent": "Mozilla/5.0 (iPhone)",
        "ad_id": "ad-1",
        "campaign_id": "cmp-1",
        "advertiser_id": "adv-1",
    }
    doc.update(changes)
    return doc


def reason_of(doc: object) -> str:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(InvalidEvent) as info:
        parse_click(raw)
    return info.value.reason


def test_good_click_parses_to_typed_record() -> None:
    click = parse_click(orjson.dumps(good_click()))
    assert click.event_time_ms == T0
    assert click.logged_in is True
    assert click.slice == "mobile/in"
    assert click.entity_key == "u:u-1"


def test_click_round_trips_through_its_wire_form() -> None:
    click = parse_click(orjson.dumps(good_click()))
    assert parse_click(click.to_json()) == click
    assert orjson.loads(click.to_json())["event_time"] == "2025-11-22T08:26:40.123Z"


def test_ground_truth_and_unknown_fields_are_ignored() -> None:
    doc = good_click(_truth={"actor": "bot", "family": "fast_scraper"}, new_field=1)
    click = parse_click(orjson.dumps(doc))
    assert "_truth" not in orjson.loads(click.to_json())
    assert not hasattr(click, "_truth")


def test_ipv6_is_normalised_so_one_address_is_one_key() -> None:
    click = parse_click(orjson.dumps(good_click(ip="2001:0DB8:0000:0000:0000:0000:0000:0001")))
    assert click.ip == "2001:db8::1"


def _reference_ip(raw: str) -> str | None:
    try:
        return ipaddress.ip_address(raw).compressed
    except ValueError:
        return None


def _ours(raw: str) -> str | None:
    try:
        return normalise_ip(raw)
    except InvalidEvent:
        return None


@st.composite
def ip_texts(draw: st.DrawFn) -> str:
    """An address written in the many ways producers write them: exploded, upper case, padded, with
    embedded IPv4, with runs of zero hextets (where RFC 5952 compression has ties to break)."""
    if draw(st.booleans()):
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            draw(st.integers(0, 2**32 - 1))
        )
    else:
        hextets = draw(
            st.lists(
                st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xDB8]) | st.integers(0, 0xFFFF), min_size=8, max_size=8
            )
        )
        address = ipaddress.IPv6Address(sum(h << (16 * (7 - i)) for i, h in enumerate(hextets)))
    forms = [str(address), address.exploded, address.exploded.upper()]
    if address.version == 6:
        forms.append(":".join(f"{int(h, 16):x}" for h in address.exploded.split(":")))
        forms.append(f"::ffff:{ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)}")
        forms.append(f"{address}%eth0")
    else:
        forms.append(".".join(f"0{p}" for p in str(address).split(".")))  # leading zeros: refused
    return draw(st.sampled_from(forms))


@given(ip_texts() | st.text(alphabet="0123456789abcdefABCDEF:.%x ", max_size=45) | st.text(max_size=45))
@settings(max_examples=2000)
def test_ip_normalisation_equals_ipaddress_for_any_text(raw: str) -> None:
    assert _ours(raw) == _reference_ip(raw)


def test_anonymous_click_is_keyed_by_session() -> None:
    click = parse_click(orjson.dumps(good_click(user_id=None, logged_in=False)))
    assert click.user_id is None
    assert click.entity_key == "s:s-1"
    assert click.slice == "mobile/anon"


def test_offsets_are_converted_to_utc() -> None:
    assert parse_time("2025-11-22T09:26:40.123+01:00") == T0


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (good_click(click_id=None), "click_id: expected string, got null"),
        ({k: v for k, v in good_click().items() if k != "click_id"}, "click_id: missing"),
        (good_click(click_id=""), "click_id: empty"),
        (good_click(event_time="yesterday"), "event_time: unparsable time 'yesterday'"),
        (
            good_click(event_time="2025-11-22T08:26:40"),
            "event_time: time '2025-11-22T08:26:40' has no UTC offset",
        ),
        (good_click(event_time=1763800000), "event_time: expected an RFC 3339 string, got integer"),
        (
            good_click(event_time="1970-01-01T00:00:00Z"),
            "event_time: time '1970-01-01T00:00:00Z' outside 2000..2100",
        ),
        (good_click(ip="300.1.2.3"), "ip: invalid IPv4/IPv6 address '300.1.2.3'"),
        (good_click(ip="fe80::1::2"), "ip: invalid IPv4/IPv6 address 'fe80::1::2'"),
        (good_click(logged_in="yes"), "logged_in: expected boolean, got string"),
        (good_click(logged_in=1), "logged_in: expected boolean, got integer"),
        (good_click(user_id=None), "logged_in is true but user_id is missing"),
        (good_click(device_type="tv"), "device_type: 'tv' not one of desktop, mobile, app"),
        (good_click(user_agent="x" * 1025), "user_agent: 1025 characters > 1024"),
        (good_click(ad_id=["a"]), "ad_id: expected string, got array"),
        ([good_click()], "expected a JSON object, got array"),
    ],
)
def test_each_contract_breach_has_a_readable_reason(doc: object, expected: str) -> None:
    assert reason_of(doc) == expected


def test_non_json_and_oversize_bytes_are_rejected() -> None:
    assert reason_of(b"\xff\xfe\x00garbage").startswith("not JSON:")
    assert reason_of(b"").startswith("not JSON:")
    big = orjson.dumps(good_click(padding="x" * 9000))
    assert reason_of(big) == f"oversize event: {len(big)} bytes > 8192"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    try:
        parse_click(raw)
    except InvalidEvent as exc:
        assert exc.reason


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(list(good_click())), _json, max_size=11))
def test_arbitrary_json_objects_never_crash_the_parser(doc: dict[str, object]) -> None:
    try:
        parse_click(orjson.dumps(doc))
    except InvalidEvent as exc:
        assert exc.reason


# Field values, valid and not, that both the parser and a JSON Schema validator understand the same way.
_FIELD_VALUES: dict[str, list[object]] = {
    "click_id": ["c", "x" * 128, "", "x" * 129, 5, None],
    "event_time": ["2025-11-22T08:26:40Z", "2025-11-22T08:26:40.5+02:00", "2025-11-22", "now", 3],
    "ip": ["10.1.2.3", "::1", "2001:db8::8a2e:370:7334", "10.1.2", "gg::1", 7],
    "session_id": ["s", "", None],
    "user_id": ["u", None, "", 9],
    "logged_in": [True, False, "true", 0],
    "device_type": ["desktop", "mobile", "app", "tv", None],
    "user_agent": ["UA", "u" * 1024, "u" * 1025, 1.5],
    "ad_id": ["a", ""],
    "campaign_id": ["c", False],
    "advertiser_id": ["v", None],
}


@st.composite
def click_docs(draw: st.DrawFn) -> dict[str, object]:
    doc: dict[str, object] = {}
    for name, values in _FIELD_VALUES.items():
        if draw(st.integers(0, 12)) == 0:
            continue  # field left out
        doc[name] = draw(st.sampled_from(values))
    return doc


_CLICK_VALIDATOR = jsonschema.Draft202012Validator(
    all_schemas()["click.schema.json"], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


@settings(max_examples=400)
@given(click_docs())
def test_parser_and_published_json_schema_agree(doc: dict[str, object]) -> None:
    schema_ok = _CLICK_VALIDATOR.is_valid(doc)
    try:
        parse_click(orjson.dumps(doc))
        parser_ok = True
    except InvalidEvent:
        parser_ok = False
    assert parser_ok == schema_ok, doc


def test_schema_files_in_repo_match_the_code() -> None:
    for name, schema in all_schemas().items():
        path = SCHEMA_DIR / name
        assert path.exists(), f"{path} missing: run `ivt schemas`"
        assert path.read_bytes() == render(schema), f"{path} is stale: run `ivt schemas`"


@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_799_999))
def test_time_format_round_trips_to_the_millisecond(ms: int) -> None:
    assert parse_time(format_time(ms)) == ms


def test_other_records_round_trip() -> None:
    purchase = Purchase("p1", "c1", None, T0, 19.99)
    assert parse_purchase(purchase.to_json()) == purchase
    rfm = AccountRfm("u1", 0.9, 3.0, 12, 450.0, T0)
    assert parse_account_rfm(rfm.to_json()) == rfm
    verdict = Verdict("c1", T0, "invalid", 0.93, 0.5, "app/anon", "m-1", 0, "live", T0 + 7, "v1", [1.0, 0.5])
    assert parse_verdict(verdict.to_json()) == verdict
    control = ModelControl("m-2", "rollback", T0, "IVR jumped in app/anon")
    assert parse_model_control(control.to_json()) == control


def test_record_validators_reject_out_of_range_values() -> None:
    with pytest.raises(InvalidEvent, match="rfm_score"):
        parse_account_rfm(
            orjson.dumps({**orjson.loads(AccountRfm("u", 0.5, 1, 1, 1, T0).to_json()), "rfm_score": 2})
        )
    with pytest.raises(InvalidEvent, match="amount"):
        parse_purchase(
            orjson.dumps({**orjson.loads(Purchase("p", "c", None, T0, 1).to_json()), "amount": -1})
        )


def test_slices_cover_device_types_crossed_with_login() -> None:
    assert len(SLICES) == 6
    assert slice_key("app", False) in SLICES


def test_click_is_immutable() -> None:
    click = parse_click(orjson.dumps(good_click()))
    with pytest.raises(AttributeError):
        click.ip = "1.1.1.1"  # type: ignore[misc]
    assert isinstance(click, Click)


_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_header = st.tuples(st.text(max_size=20), st.binary(max_size=20))


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.none() | st.text(min_size=1, max_size=12),
            st.lists(_float32, max_size=8),
            st.lists(_header, max_size=3),
        ),
        max_size=5,
    )
)
def test_entity_bundles_round_trip_clicks_features_and_header_bytes(
    items: list[tuple[str, str | None, list[float], list[tuple[str, bytes]]]],
) -> None:
    base = parse_click(orjson.dumps(good_click(user_id=None, logged_in=False)))
    bundle = [
        (Click(**{**_fields(base), "click_id": cid, "user_id": uid}), np.asarray(f, dtype=np.float32), h)
        for cid, uid, f, h in items
    ]
    decoded = decode_entity_bundle(encode_entity_bundle(bundle), [("ivt-ignored", b"x")])
    assert [c for c, _, _ in decoded] == [c for c, _, _ in bundle]
    assert [h for _, _, h in decoded] == [h for _, _, h in bundle]
    for (_, got, _), (_, sent, _) in zip(decoded, bundle, strict=True):
        # float32 -> JSON -> float64 -> float32 is exact: the user stage sees the IP stage's values
        assert np.array_equal(np.asarray(got, dtype=np.float32), sent)


def _fields(click: Click) -> dict[str, object]:
    return {name: getattr(click, name) for name in Click.__slots__}


def test_a_one_click_record_from_before_bundles_still_decodes_with_its_record_headers() -> None:
    click = parse_click(orjson.dumps(good_click()))
    old = orjson.dumps({**_fields(click), "ip_features": [1.5, 2.0]})
    headers = [("ivt-intended-ns", b"123")]
    assert decode_entity_bundle(old, headers) == [(click, [1.5, 2.0], headers)]


def test_a_bundle_with_clicks_as_objects_from_an_older_worker_still_decodes() -> None:
    click = parse_click(orjson.dumps(good_click()))
    old = orjson.dumps([[_fields(click), [1.5], [["ivt-intended-ns", "123"]]]])
    assert decode_entity_bundle(old, []) == [(click, [1.5], [("ivt-intended-ns", b"123")])]
    assert len(encode_entity_bundle([(click, [1.5], [("ivt-intended-ns", b"123")])])) < len(old)


@pytest.mark.parametrize(
    "raw", [b"", b"[1]", b"[[1, 2]]", b"{}", b'[[{"click_id": "c"}, [], []]]', b'[[["c", 1], [], []]]', b"3"]
)
def test_a_record_that_is_not_a_bundle_is_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(InvalidEvent, match="not a bundle"):
        decode_entity_bundle(raw, [])
