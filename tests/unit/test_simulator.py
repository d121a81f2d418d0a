"""The traffic simulator: determinism, the families' traits, rhythm, purchases, contracts, memory."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiokafka.partitioner import murmur2 as kafka_murmur2
from typer.testing import CliRunner

from app.cli.simulate import simulate_cli
from app.contracts.events import format_time, parse_account_rfm, parse_click, parse_purchase
from app.contracts.settings import Settings
from app.simulator import encode, rhythm
from app.simulator.bots import BURST_MAX_MS, burst_attacks
from app.simulator.generator import CLICK_SCHEMA, Simulator
from app.simulator.history import iter_history, read_manifest, write_history
from app.simulator.live import TopicLayout, encode_chunk, users_for_rate
from app.simulator.params import SimParams
from app.simulator.population import Population
from app.simulator.truth import BOT_FAMILIES, FAMILIES

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
USERS = 6_000
DAYS = 2


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("history")
    write_history(out, SimParams(seed=7, users=USERS), days=DAYS)
    return out


@pytest.fixture(scope="module")
def clicks(history: Path) -> dict[str, np.ndarray]:
    table = pa.Table.from_batches(list(iter_history(history, "clicks")))
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _by_family(clicks: dict[str, np.ndarray], family: str) -> dict[str, np.ndarray]:
    sel = clicks["truth_family"] == family
    return {k: v[sel] for k, v in clicks.items()}


# --------------------------------------------------------------------------------------------------
# Encoding helpers against their references
# --------------------------------------------------------------------------------------------------


def test_ip_text_matches_ipaddress() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    from app.simulator.population import nonzero_groups

    hi = nonzero_groups(rng.integers(0, 2**63, n).astype(np.uint64) * np.uint64(2))
    lo6 = nonzero_groups(rng.integers(0, 2**63, n).astype(np.uint64) * np.uint64(3))
    lo4 = rng.integers(0, 2**32, n).astype(np.uint64)
    v6 = rng.random(n) < 0.5
    lo = np.where(v6, lo6, lo4)
    text = encode.format_ips(hi, lo, v6).to_pylist()
    for i in range(n):
        if v6[i]:
            expected = ipaddress.IPv6Address((int(hi[i]) << 64) | int(lo[i])).compressed
        else:
            expected = str(ipaddress.IPv4Address(int(lo[i])))
        assert text[i] == expected


def test_partitions_match_kafka_murmur2() -> None:
    keys = ["1.2.3.4", "2001:db8::1", "a", "ab", "abc", "abcd", "abcde", "255.255.255.255", "x" * 39]
    arr = pa.array(keys, pa.string())
    got = encode.murmur2(arr).tolist()
    assert got == [kafka_murmur2(k.encode()) & 0xFFFFFFFF for k in keys]
    parts = encode.kafka_partition(arr, 6).tolist()
    assert parts == [(kafka_murmur2(k.encode()) & 0x7FFFFFFF) % 6 for k in keys]


def test_rfc3339_matches_events_format_time() -> None:
    ms = np.array([946_684_800_000, 1_793_577_600_123, 1_800_000_000_999])
    assert encode.rfc3339_ms(ms) == [format_time(int(x)) for x in ms]


def test_ids_are_fixed_width() -> None:
    assert encode.ids("u", (np.array([0, 42]), 5)).to_pylist() == ["u00000", "u00042"]
    assert encode.ids("s", (np.array([3]), 1), (np.array([7]), 3)).to_pylist() == ["s3007"]


# --------------------------------------------------------------------------------------------------
# Determinism and chunking
# --------------------------------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    params = SimParams(seed=11, users=1_500)
    write_history(tmp_path / "a", params, days=1)
    write_history(tmp_path / "b", params, days=1)
    write_history(tmp_path / "c", SimParams(seed=12, users=1_500), days=1)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert a["clicks/day=2026-11-02.parquet"] != c["clicks/day=2026-11-02.parquet"]


def test_a_chunk_depends_only_on_seed_and_chunk() -> None:
    params = SimParams(seed=3, users=2_000)
    first, second = Simulator(params), Simulator(params)
    chunk = params.start_ms // params.chunk_ms + 5
    for c in range(chunk - 3, chunk):
        first.generate(c)  # history before it must not matter
    a, b = first.generate(chunk), second.generate(chunk)
    assert a.rows > 0
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_memory_is_bounded_by_chunks(tmp_path: Path) -> None:
    """Waiting clicks never exceed a couple of chunks; the writer writes a row group per chunk."""
    params = SimParams(seed=5, users=2_000)
    sim = Simulator(params)
    waiting, per_chunk = [], []
    for out in sim.run(params.start_ms + 3 * DAY_MS):
        waiting.append(sim._clicks.rows)
        per_chunk.append(out.clicks.rows)
    assert max(waiting) < 2 * max(per_chunk)
    write_history(tmp_path, params, days=1)
    assert pq.ParquetFile(tmp_path / "clicks" / "day=2026-11-02.parquet").num_row_groups == 24


# --------------------------------------------------------------------------------------------------
# The history files
# --------------------------------------------------------------------------------------------------


def test_manifest_and_layout(history: Path) -> None:
    manifest = read_manifest(history)
    assert manifest["seed"] == 7 and manifest["days"] == DAYS
    assert manifest["end_ms"] - manifest["start_ms"] == DAYS * DAY_MS
    for stream in ("clicks", "purchases", "account_rfm"):
        assert manifest["streams"][stream]["files"] == [
            f"{stream}/day=2026-11-02.parquet",
            f"{stream}/day=2026-11-03.parquet",
        ]
    assert pq.read_schema(history / "clicks" / "day=2026-11-02.parquet").names == CLICK_SCHEMA.names
    by_family = manifest["counts"]["clicks_by_family"]
    assert set(by_family) == set(FAMILIES)
    assert sum(by_family.values()) == manifest["counts"]["clicks"]


def test_iter_history_streams_batches_of_chosen_columns(history: Path) -> None:
    batches = list(iter_history(history, "clicks", columns=["click_id", "event_time_ms"], batch_size=1000))
    assert all(b.num_rows <= 1000 for b in batches)
    assert batches[0].schema.names == ["click_id", "event_time_ms"]
    total = sum(b.num_rows for b in batches)
    assert total == read_manifest(history)["counts"]["clicks"]
    with pytest.raises(ValueError):
        next(iter_history(history, "nope"))


def test_clicks_are_ordered_unique_and_well_formed(clicks: dict[str, np.ndarray]) -> None:
    t = clicks["event_time_ms"]
    assert (np.diff(t) >= 0).all()
    assert t.min() >= 1_793_577_600_000 and t.max() < 1_793_577_600_000 + DAYS * DAY_MS
    assert len(set(clicks["click_id"].tolist())) == t.shape[0]
    logged_in = clicks["logged_in"].astype(bool)
    has_user = np.array([u is not None for u in clicks["user_id"]])
    assert (logged_in == has_user).all()
    assert set(clicks["device_type"].tolist()) == {"desktop", "mobile", "app"}
    for ip in set(clicks["ip"][:: max(1, t.shape[0] // 3000)].tolist()):
        assert ipaddress.ip_address(ip).compressed == ip


def test_every_click_parses_and_truth_stays_outside(clicks: dict[str, np.ndarray]) -> None:
    names = [n for n in CLICK_SCHEMA.names if not n.startswith("truth_")]
    n = clicks["click_id"].shape[0]
    for i in range(n):
        doc = {k: clicks[k][i] for k in names}
        doc["event_time"] = format_time(int(doc.pop("event_time_ms")))
        doc["logged_in"] = bool(doc["logged_in"])
        doc["_truth"] = {
            "actor": clicks["truth_actor"][i],
            "family": clicks["truth_family"][i],
            "actor_id": 1,
        }
        click = parse_click(orjson.dumps(doc))
        assert click.click_id == doc["click_id"]
    assert not hasattr(click, "_truth")


def test_all_families_present_with_humans_the_majority(history: Path) -> None:
    counts = read_manifest(history)["counts"]["clicks_by_family"]
    assert all(counts[f] > 0 for f in FAMILIES), counts
    assert counts["human"] > 0.55 * sum(counts.values())


def _session_rate(c: dict[str, np.ndarray]) -> tuple[float, float]:
    """Median clicks per session, and median clicks per minute of multi-click sessions."""
    per_session: dict[str, list[int]] = defaultdict(list)
    for s, t in zip(c["session_id"].tolist(), c["event_time_ms"].tolist(), strict=True):
        per_session[s].append(t)
    sizes = np.array([len(v) for v in per_session.values()])
    speeds = [len(v) / max((max(v) - min(v)) / 60_000, 1 / 60) for v in per_session.values() if len(v) > 1]
    return float(np.median(sizes)), float(np.median(speeds))


def test_fast_scrapers_click_far_faster_than_humans(clicks: dict[str, np.ndarray]) -> None:
    human_size, human_speed = _session_rate(_by_family(clicks, "human"))
    bot_size, bot_speed = _session_rate(_by_family(clicks, "fast_scraper"))
    assert bot_size >= 10 * human_size
    assert bot_speed >= 20 * human_speed
    scrapers = _by_family(clicks, "fast_scraper")
    assert not scrapers["logged_in"].any()
    assert all("Mozilla" not in ua or "Headless" in ua for ua in set(scrapers["user_agent"].tolist()))


def test_gateways_carry_many_humans_and_gateway_bots_hide_among_them(clicks: dict[str, np.ndarray]) -> None:
    users_per_ip: dict[str, set[str]] = defaultdict(set)
    humans = _by_family(clicks, "human")
    for ip, user in zip(humans["ip"].tolist(), humans["user_id"].tolist(), strict=True):
        if user is not None:
            users_per_ip[ip].add(user)
    crowded = {ip for ip, users in users_per_ip.items() if len(users) >= 30}
    assert len(crowded) >= 5
    bots = _by_family(clicks, "gateway_bot")
    share_on_crowded = np.isin(bots["ip"], list(crowded)).mean()
    assert share_on_crowded > 0.5
    # some crowded IPs are IPv4 carrier gateways, others offices; households stay small
    household_sizes = sorted(len(u) for u in users_per_ip.values())
    assert household_sizes[len(household_sizes) // 2] <= 3


def test_ip_rotators_use_a_new_ip_for_nearly_every_click(clicks: dict[str, np.ndarray]) -> None:
    rot = _by_family(clicks, "ip_rotator")
    for actor in np.unique(rot["truth_actor_id"]):
        sel = rot["truth_actor_id"] == actor
        assert np.unique(rot["ip"][sel]).shape[0] >= 0.9 * sel.sum()
    # ...while keeping one session over many clicks
    size, _ = _session_rate(rot)
    assert size >= 8
    assert any(":" in ip for ip in rot["ip"].tolist())  # IPv6 proxies too


def test_stolen_accounts_are_logged_in_with_good_rfm(history: Path, clicks: dict[str, np.ndarray]) -> None:
    stolen = _by_family(clicks, "stolen_account")
    assert stolen["logged_in"].all()
    rfm = pa.Table.from_batches(list(iter_history(history, "account_rfm"))).to_pydict()
    score = dict(zip(rfm["user_id"], rfm["rfm_score"], strict=True))
    victims = set(stolen["user_id"].tolist())
    assert victims <= set(score)
    assert np.mean([score[v] >= 0.55 for v in victims]) > 0.9  # weak labels would call them human


def test_bursts_are_concentrated_in_time(clicks: dict[str, np.ndarray]) -> None:
    burst = _by_family(clicks, "burst")
    assert burst["event_time_ms"].shape[0] > 0
    minutes = np.unique(burst["event_time_ms"] // 60_000)
    assert minutes.shape[0] <= 3 * BURST_MAX_MS / 60_000 * DAYS  # a few attacks of <= 45 min a day
    # inside an attack the rate is far above the family's average rate
    per_minute = np.bincount(burst["event_time_ms"] // 60_000 - minutes.min())
    assert per_minute.max() > 30 * burst["event_time_ms"].shape[0] / (DAYS * 1440)


def test_attacks_depend_only_on_seed_and_window() -> None:
    params = SimParams(seed=9, users=50_000)
    whole = burst_attacks(params, 100_000, 100_010)
    parts = burst_attacks(params, 100_000, 100_004) + burst_attacks(params, 100_005, 100_010)
    assert [a["start_ms"] for a in whole] == [a["start_ms"] for a in parts]
    assert all(a["end_ms"] - a["start_ms"] <= BURST_MAX_MS for a in whole)


def test_humans_sleep_and_low_and_slow_bots_do_not(clicks: dict[str, np.ndarray]) -> None:
    def night_over_afternoon(c: dict[str, np.ndarray]) -> float:
        hour = c["event_time_ms"] // HOUR_MS % 24
        return np.isin(hour, [2, 3, 4]).sum() / max(np.isin(hour, [13, 14, 15]).sum(), 1)

    assert night_over_afternoon(_by_family(clicks, "human")) < 0.3
    slow = _by_family(clicks, "low_and_slow")
    assert 0.6 < night_over_afternoon(slow) < 1.6
    size, _ = _session_rate(slow)
    assert size <= 2
    assert np.unique(slow["ip"]).shape[0] <= np.unique(slow["truth_actor_id"]).shape[0]


def test_humans_are_logged_in_and_anonymous_on_every_device(clicks: dict[str, np.ndarray]) -> None:
    humans = _by_family(clicks, "human")
    for device in ("desktop", "mobile", "app"):
        sel = humans["device_type"] == device
        share = humans["logged_in"][sel].mean()
        assert 0.2 < share < 0.95, (device, share)


def test_purchases_follow_their_clicks(history: Path, clicks: dict[str, np.ndarray]) -> None:
    purchases = pa.Table.from_batches(list(iter_history(history, "purchases"))).to_pydict()
    assert len(purchases["purchase_id"]) > 50
    click_time = dict(zip(clicks["click_id"].tolist(), clicks["event_time_ms"].tolist(), strict=True))
    family = dict(zip(clicks["click_id"].tolist(), clicks["truth_family"].tolist(), strict=True))
    delays = []
    for cid, t, fam in zip(
        purchases["click_id"], purchases["event_time_ms"], purchases["truth_family"], strict=True
    ):
        assert cid in click_time and family[cid] == fam
        assert t > click_time[cid]
        delays.append(t - click_time[cid])
    assert min(delays) < 10 * 60_000 and max(delays) > 6 * HOUR_MS  # minutes to many hours
    assert set(purchases["truth_family"]) <= {"human", "stolen_account"}
    assert (np.diff(purchases["event_time_ms"]) >= 0).all()
    for i in range(len(purchases["purchase_id"])):
        doc = {k: purchases[k][i] for k in ("purchase_id", "click_id", "user_id", "amount")}
        doc["event_time"] = format_time(purchases["event_time_ms"][i])
        assert parse_purchase(orjson.dumps(doc)).click_id == doc["click_id"]


def test_rfm_updates_parse_and_precede_first_logged_in_click(
    history: Path, clicks: dict[str, np.ndarray]
) -> None:
    rfm = pa.Table.from_batches(list(iter_history(history, "account_rfm"))).to_pydict()
    first_update: dict[str, int] = {}
    for uid, t in zip(rfm["user_id"], rfm["updated_at_ms"], strict=True):
        first_update.setdefault(uid, t)
    for uid, t in zip(clicks["user_id"].tolist(), clicks["event_time_ms"].tolist(), strict=True):
        if uid is not None:
            assert first_update[uid] <= t
    scores = np.array(rfm["rfm_score"])
    assert (scores >= 0).all() and (scores <= 1).all() and (scores > 0.7).any() and (scores < 0.2).any()
    for i in range(0, len(rfm["user_id"]), 97):
        doc = {k: rfm[k][i] for k in ("user_id", "rfm_score", "recency_days", "frequency", "monetary")}
        doc["updated_at"] = format_time(rfm["updated_at_ms"][i])
        assert parse_account_rfm(orjson.dumps(doc)).user_id == doc["user_id"]


# --------------------------------------------------------------------------------------------------
# Rhythm, population, live encoding, CLI
# --------------------------------------------------------------------------------------------------


def test_rhythm_is_diurnal_and_weekly() -> None:
    hours = np.linspace(0, 24, 24 * 60, endpoint=False)
    assert abs(rhythm.diurnal(hours).mean() - 1.0) < 1e-9
    assert rhythm.diurnal(np.array([3.5]))[0] < 0.25 * rhythm.diurnal(np.array([14.0]))[0]
    assert rhythm.weekly(np.array([5]))[0] > rhythm.weekly(np.array([1]))[0]  # Saturday > Tuesday
    week = np.arange(0, 7 * DAY_MS, 60_000) + 1_793_577_600_000
    assert rhythm.intensity(week, 0.0).max() <= rhythm.RHYTHM_MAX


def test_population_is_stateless_and_user_numbers_are_a_bijection() -> None:
    pop = Population(SimParams(seed=1, users=10_007))
    idx = np.arange(10_007)
    assert np.unique(pop.user_number(idx)).shape[0] == 10_007
    again = Population(SimParams(seed=1, users=10_007))
    np.testing.assert_array_equal(pop.home_ip(idx)[1], again.home_ip(idx)[1])
    assert 0.6 < pop.has_account(idx).mean() < 0.85


def test_live_encoding_parses_with_truth_key_and_partition() -> None:
    params = SimParams(seed=4, users=20_000, chunk_s=60, warmup_s=600)
    sim = Simulator(params)
    out = next(iter(sim.run(None)))
    settings = Settings.from_env(topic_prefix="x-")
    block = encode_chunk(params, sim, out, TopicLayout.default(settings))
    assert len(block.values) == out.clicks.rows > 0
    families = set()
    for key, value, part in zip(block.keys, block.values, block.partitions, strict=True):
        click = parse_click(value)
        assert key == click.ip.encode()
        assert part == (kafka_murmur2(key) & 0x7FFFFFFF) % 6
        families.add(orjson.loads(value)["_truth"]["family"])
    assert families >= {"human", "fast_scraper"}
    topics = {t for t, _, _, _ in block.side}
    assert topics <= {"x-purchases", "x-account-rfm"} and "x-account-rfm" in topics
    for topic, part, key, value in block.side:
        assert part == (kafka_murmur2(key) & 0x7FFFFFFF) % 6
        if topic == "x-account-rfm":
            assert parse_account_rfm(value).user_id == key.decode()
    pieces = block.split(100)
    assert sum(len(p.values) for p in pieces) == len(block.values)
    assert sum(len(p.side) for p in pieces) == len(block.side)


def test_users_for_rate_scales_with_rate() -> None:
    start = 1_793_577_600_000 + 14 * HOUR_MS
    small = users_for_rate(100.0, start, seed=1)
    big = users_for_rate(10_000.0, start, seed=1)
    assert 90 < big / small < 110


def test_history_cli_prints_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        simulate_cli, ["history", "--days", "1", "--users", "500", "--seed", "3", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "clicks/s" in result.output and "peak RSS" in result.output
    assert (tmp_path / "manifest.json").exists()
    assert read_manifest(tmp_path)["params"]["users"] == 500


def test_bot_scale_zero_means_humans_only() -> None:
    params = SimParams(seed=2, users=3_000, bot_scale=0.0)
    out = Simulator(params).generate(params.start_ms // params.chunk_ms + 14)
    assert set(np.unique(out["family"]).tolist()) == {0}
    assert all(params.bots(f) == 0 for f in BOT_FAMILIES)
