"""What one click costs the feature engine, as the live stages pay it (a script, not a test).

Per click: ``ip_stage`` on the IP's stored bytes + encoding the new IP state, then ``entity_stage`` on
the user's and session's stored bytes + encoding both: exactly a stage's work between reading its
tables and writing them back, without Kafka. State is held in dicts of bytes, as the tables hold
it. Also: the size of each key's value (what every changelog record carries) for a normal and a
gateway IP, and the DataSketches HLL costs behind the lg_k choice in app/features/distinct.py.

    .venv/bin/python benchmarks/bench_features.py            # ~10 s
    .venv/bin/python benchmarks/bench_features.py --clicks 20000 --gateway-hours 6   # make bench-short

Run it on an otherwise idle machine; figures on a shared one are upper bounds.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from datasketches import hll_sketch, hll_union, tgt_hll_type

from app.contracts.events import Click
from app.features import FEATURE_VERSION, N_FEATURES, entity_stage, ip_stage
from app.features.distinct import LG_K

T0 = int(datetime(2026, 11, 23, 6, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
DEVICES = ("desktop", "mobile", "app")


def click(i: int, t_ms: int, ip: str, session: str, user: str | None) -> Click:
    return Click(
        click_id=f"c{i}",
        event_time_ms=t_ms,
        ip=ip,
        session_id=session,
        user_id=user,
        logged_in=user is not None and i % 2 == 0,
        device_type=DEVICES[i % 3],
        user_agent="Mozilla/5.0",
        ad_id="ad",
        campaign_id="camp",
        advertiser_id="adv",
    )


def normal_stream(n: int, seed: int) -> list[Click]:
    """Households: ~n/3 users over ~n/5 IPs, a third anonymous, sessions of a few clicks, ~4 h."""
    rng = random.Random(seed)
    n_users = max(n // 3, 10)
    t = T0
    out = []
    for i in range(n):
        t += rng.randrange(0, 2 * 4 * HOUR_MS // n + 1)
        u = rng.randrange(n_users)
        out.append(
            click(
                i,
                t,
                ip=f"10.{u % 251}.{(u // 251) % 251}.{u % 3}",
                session=f"s{u}-{(t - T0) // (20 * 60_000)}",  # a new session every 20 min of activity
                user=None if u % 3 == 0 else f"u{u}",
            )
        )
    return out


def one_click(c: Click, ips: dict, users: dict, sessions: dict) -> np.ndarray:
    """The live agents' work for one click: read bytes, both stages, write bytes."""
    ip_state, ip_features = ip_stage(c, ips.get(c.ip))
    ips[c.ip] = ip_state.to_bytes()
    user, session, vec = entity_stage(c, users.get(c.entity_key), sessions.get(c.session_id), ip_features)
    users[c.entity_key] = user.to_bytes()
    sessions[c.session_id] = session.to_bytes()
    return vec


def timed(fn: Callable[[], object], clicks: int) -> np.ndarray:
    """Per-click wall time in µs of ``fn`` run once per click (fn consumes its own iterator)."""
    out = np.empty(clicks)
    pc = time.perf_counter_ns
    for k in range(clicks):
        t0 = pc()
        fn()
        out[k] = (pc() - t0) / 1000
    return out


def row(name: str, us: np.ndarray) -> str:
    return (
        f"{name:<44} {us.mean():>8.1f} {np.percentile(us, 50):>8.1f} {np.percentile(us, 99):>8.1f}"
        f" {us.max():>9.1f} {1e6 / us.mean():>10,.0f}"
    )


def bench_normal(n: int, seed: int) -> tuple[list[str], dict[str, float]]:
    clicks = normal_stream(n, seed)
    ips: dict[str, bytes] = {}
    users: dict[str, bytes] = {}
    sessions: dict[str, bytes] = {}
    warm = n // 4
    for c in clicks[:warm]:
        one_click(c, ips, users, sessions)
    rest = iter(clicks[warm:])
    total = timed(lambda: one_click(next(rest), ips, users, sessions), n - warm)

    # the two stages apart, on a fresh copy of the tables and the same clicks
    ips2, users2, sessions2 = {}, {}, {}
    for c in clicks[:warm]:
        one_click(c, ips2, users2, sessions2)
    stage_ip = np.empty(n - warm)
    stage_entity = np.empty(n - warm)
    pc = time.perf_counter_ns
    for k, c in enumerate(clicks[warm:]):
        t0 = pc()
        st, ipf = ip_stage(c, ips2.get(c.ip))
        ips2[c.ip] = st.to_bytes()
        t1 = pc()
        u, s, _ = entity_stage(c, users2.get(c.entity_key), sessions2.get(c.session_id), ipf)
        users2[c.entity_key] = u.to_bytes()
        sessions2[c.session_id] = s.to_bytes()
        t2 = pc()
        stage_ip[k] = (t1 - t0) / 1000
        stage_entity[k] = (t2 - t1) / 1000
    rows = [
        row("normal keys: both stages + state bytes", total),
        row("  ip_stage + IpState.to_bytes", stage_ip),
        row("  entity_stage + User/SessionState.to_bytes", stage_entity),
    ]
    sizes = {
        "IP (normal)": statistics.mean(map(len, ips.values())),
        "IP (normal, max)": max(map(len, ips.values())),
        "user / entity": statistics.mean(map(len, users.values())),
        "session": statistics.mean(map(len, sessions.values())),
    }
    return rows, sizes


def bench_gateway(hours: int, users_per_hour: int, measure: int) -> tuple[list[str], dict[str, float]]:
    """One IP with ``users_per_hour`` new users every hour for ``hours`` hours, then measured clicks.

    Beyond ~200 keys an hour every bucket sketch is in HLL mode at its full, fixed size, so the
    value and the cost are those of an IP with millions of users a day.
    """
    ip = "100.64.0.1"
    state = None
    i = 0
    step = HOUR_MS // users_per_hour
    for h in range(hours):
        for k in range(users_per_hour):
            c = click(i, T0 + h * HOUR_MS + k * step, ip, f"gs{i}", f"g{i}")
            state, _ = ip_stage(c, state)  # objects while warming: quicker, same result
            i += 1
    blob = state.to_bytes()
    t_next = T0 + hours * HOUR_MS

    # the first click of a new hour rebuilds the running 24 h sketches from the buckets (once an hour)
    roll = np.empty(50)
    for r in range(len(roll)):
        store = {ip: blob}
        c = click(i + r, t_next, ip, f"gs{i + r}", f"g{i + r}")
        t0 = time.perf_counter_ns()
        one_click(c, store, {}, {})
        roll[r] = (time.perf_counter_ns() - t0) / 1000

    store = {ip: blob}
    users: dict[str, bytes] = {}
    sessions: dict[str, bytes] = {}
    seq = iter(range(measure))

    def gateway_click() -> None:
        k = next(seq)
        c = click(i + k, t_next + k * 50, ip, f"gs{i + k}", f"g{i + k}")
        one_click(c, store, users, sessions)

    us = timed(gateway_click, measure)
    rows = [
        row("gateway IP: both stages + state bytes", us[1:]),
        row("  first click of an hour (24-bucket rebuild)", roll),
    ]
    return rows, {f"IP (gateway, {hours} h of HLL buckets)": len(store[ip])}


def bench_hll() -> list[str]:
    out = []
    for lg in sorted({8, 10, LG_K}):
        s = hll_sketch(lg, tgt_hll_type.HLL_4)
        for x in range(50_000):
            s.update(x)
        b = s.serialize_compact()
        n = 20_000

        def per(fn: Callable[[], object], n: int = n) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            return (time.perf_counter() - t0) / n * 1e6

        upd = per(lambda s=s: s.update("user-42"))
        de = per(lambda b=b: hll_sketch.deserialize(b))
        ser = per(lambda s=s: s.serialize_compact())
        sketches = [hll_sketch.deserialize(b) for _ in range(25)]

        def union(k: int, lg: int = lg, sketches: list = sketches) -> None:
            u = hll_union(lg)
            for sk in sketches[:k]:
                u.update(sk)
            u.get_result(tgt_hll_type.HLL_4).serialize_compact()

        u2 = per(lambda: union(2), 2000)
        u25 = per(lambda: union(25), 200)
        err = abs(hll_sketch.get_rel_err(False, True, lg, 1)) * 100
        out.append(
            f"lg_k={lg:<3} {len(b):>6} B {err:>6.1f} % {upd:>8.2f} {de:>8.2f} {ser:>8.2f} {u2:>8.1f} {u25:>9.1f}"
            + ("   <- in use" if lg == LG_K else "")
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=60_000, help="clicks in the normal-key stream")
    ap.add_argument("--gateway-hours", type=int, default=25, help="hours of gateway traffic to warm up")
    ap.add_argument("--gateway-users-per-hour", type=int, default=2_000)
    ap.add_argument("--gateway-clicks", type=int, default=5_000, help="measured gateway clicks")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    gc.collect()
    print(
        f"feature engine {FEATURE_VERSION} ({N_FEATURES} features), Python {platform.python_version()},"
        f" {platform.machine()}, numpy {np.__version__}"
    )
    normal_rows, sizes = bench_normal(args.clicks, args.seed)
    gw_rows, gw_sizes = bench_gateway(args.gateway_hours, args.gateway_users_per_hour, args.gateway_clicks)
    print()
    print(f"{'per click, µs':<44} {'mean':>8} {'p50':>8} {'p99':>8} {'max':>9} {'clicks/s':>10}")
    for r in normal_rows + gw_rows:
        print(r)
    print()
    print(f"{'state value per key (changelog record)':<44} {'bytes':>8}")
    for k, v in {**sizes, **gw_sizes}.items():
        print(f"{'  ' + k:<44} {v:>8.0f}")
    print()
    print("DataSketches HLL_4 (µs)  size      1σ   update    deser      ser  union 2  union 25")
    for r in bench_hll():
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
