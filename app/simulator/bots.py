"""Bot families: one generator per family, each returning the clicks of sessions started in a chunk.

What each family is, and what SLIDR's features can and cannot see of it, is written in
:mod:`app.simulator.truth`. Rates below are per actor; the number of actors of each family scales
with the population (:meth:`SimParams.bots`). Per 50,000 users and day, roughly: fast_scraper 55k
clicks, low_and_slow 13k, gateway_bot 25k, ip_rotator 35k, stolen_account 20k, burst 15k on average
(in one to three attacks of a few to 45 minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np

from app.simulator import rhythm
from app.simulator.encode import uhash, unit
from app.simulator.params import SimParams
from app.simulator.population import (
    APP,
    DATACENTRE_V4,
    DESKTOP,
    MOBILE,
    N_ADS,
    N_CAMPAIGNS,
    RESIDENTIAL_V4,
    RESIDENTIAL_V6,
    Population,
    device_ua,
    rfm_score,
    ua_index,
    v4_in,
    v6_in,
)
from app.simulator.sessions import CLICK_DTYPES, ChunkContext, Columns, clicks, expand
from app.simulator.truth import family_code

__all__ = [
    "fast_scraper",
    "low_and_slow",
    "gateway_bot",
    "ip_rotator",
    "stolen_account",
    "burst",
    "BOT_GENERATORS",
    "burst_attacks",
    "stolen_victims",
]

_HOUR_S = 3600.0
# salts of bot attributes (kept apart from the population's)
_S_DC, _S_UA, _S_HOME, _S_KIND, _S_TARGET, _S_PROXY, _S_VICTIM, _S_BOTNET, _S_GW = range(101, 110)


def _actor_session_starts(
    ctx: ChunkContext, actors: int, sessions_per_hour: float
) -> tuple[np.ndarray, np.ndarray]:
    """Sessions of ``actors`` bots, each a flat Poisson process (bots do not sleep)."""
    start = ctx.poisson_times(actors * sessions_per_hour / _HOUR_S)
    return ctx.rng.integers(0, actors, start.shape[0]), start


def datacentre_ip(seed: int, key: np.ndarray) -> np.ndarray:
    return v4_in(DATACENTRE_V4, uhash(seed, _S_DC, key))


def residential_ip(
    seed: int, salt: int, key: np.ndarray, v6_share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A residential-looking address per key: IPv4, or IPv6 for ``v6_share`` of the keys."""
    h = uhash(seed, salt, key)
    v6 = (h >> np.uint64(11)).astype(np.float64) / 2.0**53 < v6_share
    hi6, lo6 = v6_in(RESIDENTIAL_V6, uhash(seed, salt + 1000, key), h)
    return np.where(v6, hi6, np.uint64(0)), np.where(v6, lo6, v4_in(RESIDENTIAL_V4, h)), v6


def proxy_pool_size(ctx: ChunkContext) -> int:
    """Residential proxy exits available to rotators and account thieves."""
    return max(20_000, round(40_000 * ctx.params.scale))


def _proxy_ip(ctx: ChunkContext, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = ctx.rng.integers(0, proxy_pool_size(ctx), n)
    return residential_ip(ctx.params.seed, _S_PROXY, k, v6_share=0.15)


def _ads(ctx: ChunkContext, target_campaign: np.ndarray, targeted_share: float) -> np.ndarray:
    """Per click: an ad of the actor's target campaign, else a popular ad."""
    n = target_campaign.shape[0]
    targeted = ctx.rng.random(n) < targeted_share
    return np.where(
        targeted, ctx.pop.ads_of_campaign(ctx.rng, target_campaign), ctx.pop.popular_ads(ctx.rng, n)
    )


def _target(seed: int, family: int, actor: np.ndarray, k: int = 0) -> np.ndarray:
    """The campaign(s) an actor is paid to drain (competitor fraud) or to inflate (publisher fraud)."""
    return (uhash(seed, _S_TARGET, actor * 64 + family * 8 + k) % np.uint64(N_CAMPAIGNS)).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# The families
# --------------------------------------------------------------------------------------------------

_FAST = family_code("fast_scraper")


def fast_scraper(ctx: ChunkContext) -> Columns:
    """Data-centre crawlers: long, fast, anonymous desktop sessions with script/headless agents."""
    seed, rng = ctx.params.seed, ctx.rng
    actors = ctx.params.bots("fast_scraper")
    actor, start = _actor_session_starts(ctx, actors, sessions_per_hour=4.0)
    s = actor.shape[0]
    n = np.clip(np.rint(rng.lognormal(np.log(40.0), 0.6, s)), 10, 400).astype(np.int64)
    ip = datacentre_ip(seed, actor * 4 + rng.integers(0, 3, s))  # each crawler has three hosts
    headless = unit(seed, _S_KIND, actor * 16 + _FAST) < 0.4
    h = uhash(seed, _S_UA, actor * 16 + _FAST)
    ua = np.where(headless, ua_index("headless", h), ua_index("script", h))
    sess, t = expand(rng, start, n, gap_median_s=0.8, gap_sigma=0.5, gap_min_s=0.15)
    return clicks(
        t.shape[0],
        t_ms=t,
        family=_FAST,
        actor=actor[sess],
        session=ctx.session_keys(s)[sess],
        device=DESKTOP,
        ua=ua[sess],
        ip_lo=ip[sess],
        ad=rng.integers(0, N_ADS, t.shape[0]),  # walks the whole catalogue
    )


_SLOW = family_code("low_and_slow")


def low_and_slow(ctx: ChunkContext) -> Columns:
    """One home IP each, a real browser, one to three clicks every couple of hours, day and night."""
    seed, rng = ctx.params.seed, ctx.rng
    actors = ctx.params.bots("low_and_slow")
    actor, start = _actor_session_starts(ctx, actors, sessions_per_hour=0.6)
    s = actor.shape[0]
    n = 1 + (rng.random(s) < 0.4) + (rng.random(s) < 0.15)
    hi, lo, v6 = residential_ip(seed, _S_HOME, actor * 16 + _SLOW, v6_share=0.2)
    device = np.where(unit(seed, _S_KIND, actor * 16 + _SLOW) < 0.6, DESKTOP, MOBILE).astype(np.uint8)
    ua = device_ua(device, uhash(seed, _S_UA, actor * 16 + _SLOW))
    sess, t = expand(rng, start, n, gap_median_s=40.0, gap_sigma=0.8, gap_min_s=5.0)
    a = actor[sess]
    return clicks(
        t.shape[0],
        t_ms=t,
        family=_SLOW,
        actor=a,
        session=ctx.session_keys(s)[sess],
        device=device[sess],
        ua=ua[sess],
        ip_hi=hi[sess],
        ip_lo=lo[sess],
        ip_v6=v6[sess],
        ad=_ads(ctx, _target(seed, _SLOW, a), targeted_share=0.6),
    )


_GATEWAY = family_code("gateway_bot")


def gateway_bot(ctx: ChunkContext) -> Columns:
    """Infected phones behind carrier CGNAT and PCs behind office IPs, among the humans there.

    A fresh cookie every session; fast-ish sessions of a few to a dozen clicks; more active while
    the device's owner is awake (the device is on), but never asleep.
    """
    seed, rng, pop = ctx.params.seed, ctx.rng, ctx.pop
    actors = ctx.params.bots("gateway_bot")
    actor, start = _actor_session_starts(ctx, actors, sessions_per_hour=5.0)
    awake = 0.5 + 0.5 * rhythm.intensity(start, ctx.params.tz_offset_h) / rhythm.RHYTHM_MAX
    keep = rng.random(actor.shape[0]) < awake
    actor, start = actor[keep], start[keep]
    s = actor.shape[0]
    phone = unit(seed, _S_KIND, actor * 16 + _GATEWAY) < 0.7
    in_app = unit(seed, _S_KIND + 50, actor * 16 + _GATEWAY) < 0.5
    device = np.where(phone, np.where(in_app, APP, MOBILE), DESKTOP).astype(np.uint8)
    # a phone keeps its gateway for a few hours, like the humans' phones; a PC stays in its office
    period = start // (4 * 3_600_000)
    gw = pop.random_gateway(uhash(seed, _S_GW, actor * 1_000_003 + period))
    office = (uhash(seed, _S_KIND + 60, actor) % np.uint64(pop.n_offices)).astype(np.int64)
    ip = np.where(phone, gw, pop.office_ip(office))
    ua = device_ua(device, uhash(seed, _S_UA, actor * 16 + _GATEWAY))
    n = 4 + rng.poisson(6.0, s)
    sess, t = expand(rng, start, n, gap_median_s=6.0, gap_sigma=0.6, gap_min_s=1.5)
    a = actor[sess]
    return clicks(
        t.shape[0],
        t_ms=t,
        family=_GATEWAY,
        actor=a,
        session=ctx.session_keys(s)[sess],
        device=device[sess],
        ua=ua[sess],
        ip_lo=ip[sess],
        ad=_ads(ctx, _target(seed, _GATEWAY, a, rng.integers(0, 2, t.shape[0])), targeted_share=0.7),
    )


_ROTATOR = family_code("ip_rotator")


def ip_rotator(ctx: ChunkContext) -> Columns:
    """Residential proxies: a new IP for every click, one cookie for the whole session."""
    seed, rng = ctx.params.seed, ctx.rng
    actors = ctx.params.bots("ip_rotator")
    actor, start = _actor_session_starts(ctx, actors, sessions_per_hour=3.0)
    s = actor.shape[0]
    n = np.clip(np.rint(rng.lognormal(np.log(18.0), 0.5, s)), 5, 120).astype(np.int64)
    device = np.where(rng.random(s) < 0.6, DESKTOP, MOBILE).astype(np.uint8)
    keys = ctx.session_keys(s)
    ua = device_ua(device, uhash(seed, _S_UA, keys.astype(np.int64)))  # a new browser per session too
    sess, t = expand(rng, start, n, gap_median_s=4.0, gap_sigma=0.7, gap_min_s=0.5)
    hi, lo, v6 = _proxy_ip(ctx, t.shape[0])
    a = actor[sess]
    return clicks(
        t.shape[0],
        t_ms=t,
        family=_ROTATOR,
        actor=a,
        session=keys[sess],
        device=device[sess],
        ua=ua[sess],
        ip_hi=hi,
        ip_lo=lo,
        ip_v6=v6,
        ad=_ads(ctx, _target(seed, _ROTATOR, a), targeted_share=0.5),
    )


_STOLEN = family_code("stolen_account")
VICTIMS_PER_THIEF: Final = 4
STOLEN_PURCHASE_RATE: Final = 0.002


def stolen_victims(pop: Population, actors: int) -> np.ndarray:
    """``(actors, VICTIMS_PER_THIEF)`` population indices of the accounts each thief holds.

    Thieves pick valuable accounts: the first candidates (by hash) with an RFM score >= 0.55.
    """
    memo_key = f"stolen_victims/{actors}"
    if memo_key in pop.memo:
        return pop.memo[memo_key]
    seed = pop.seed
    tries = 48
    cand = (uhash(seed, _S_VICTIM, np.arange(actors * tries)) % np.uint64(pop.n)).astype(np.int64)
    rec, freq, mon = pop.rfm_base(cand)
    good = pop.has_account(cand) & (rfm_score(rec, freq, mon) >= 0.55)
    cand, good = cand.reshape(actors, tries), good.reshape(actors, tries)
    # good candidates first (stable), falling back to any candidate in a tiny population
    order = np.argsort(~good, axis=1, kind="stable")
    victims = np.take_along_axis(cand, order, axis=1)[:, :VICTIMS_PER_THIEF]
    pop.memo[memo_key] = victims
    return victims


def stolen_account(ctx: ChunkContext) -> Columns:
    """Taken-over accounts, logged in, from data centres and proxies, fast, at any hour."""
    seed, rng = ctx.params.seed, ctx.rng
    actors = ctx.params.bots("stolen_account")
    victims = stolen_victims(ctx.pop, actors)
    actor, start = _actor_session_starts(ctx, actors, sessions_per_hour=1.2)
    s = actor.shape[0]
    victim = victims[actor, rng.integers(0, victims.shape[1], s)]
    device = np.where(rng.random(s) < 0.5, APP, DESKTOP).astype(np.uint8)
    ua = device_ua(device, uhash(seed, _S_UA, actor * 16 + _STOLEN))
    from_dc = rng.random(s) < 0.5
    dc = datacentre_ip(seed, actor * 4 + 3)
    p_hi, p_lo, p_v6 = _proxy_ip(ctx, s)
    n = 8 + rng.poisson(12.0, s)
    sess, t = expand(rng, start, n, gap_median_s=8.0, gap_sigma=0.6, gap_min_s=2.0)
    a = actor[sess]
    v = victim[sess]
    return clicks(
        t.shape[0],
        t_ms=t,
        family=_STOLEN,
        actor=a,
        session=ctx.session_keys(s)[sess],
        user=v,
        device=device[sess],
        ua=ua[sess],
        ip_hi=np.where(from_dc, np.uint64(0), p_hi)[sess],
        ip_lo=np.where(from_dc, dc, p_lo)[sess],
        ip_v6=np.where(from_dc, False, p_v6)[sess],
        ad=_ads(ctx, _target(seed, _STOLEN, a), targeted_share=0.5),
        p_buy=STOLEN_PURCHASE_RATE,
        buyer=v,
    )


_BURST = family_code("burst")
BURST_WINDOW_MS: Final = 6 * 3_600_000
BURST_MAX_MS: Final = 45 * 60_000
BURST_KEY: Final = 10**6  # session key of a burst bot = window * BURST_KEY + bot


def burst_attacks(params: SimParams, w0: int, w1: int) -> list[dict[str, Any]]:
    """The attacks that start in 6-hour windows ``w0 .. w1`` (absolute window indices).

    Each window holds an attack with probability 0.4 (so one or two a day on average); what an attack
    looks like depends only on the seed and its window, never on how time was cut into chunks.
    """
    out: list[dict[str, Any]] = []
    intensity = params.bot_scale * params.scale * params.bot_actors.get("burst", 1)
    if intensity <= 0:
        return out
    for w in range(w0, w1 + 1):
        rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(0xB0057, w)))
        if rng.random() >= 0.4:
            continue
        start = w * BURST_WINDOW_MS + int(rng.integers(0, BURST_WINDOW_MS - BURST_MAX_MS))
        duration = int(rng.integers(5 * 60_000, BURST_MAX_MS))
        out.append(
            {
                "window": w,
                "start_ms": start,
                "end_ms": start + duration,
                "clicks_per_s": float(rng.lognormal(np.log(6.0), 0.4)) * intensity,
                "bots": max(20, round(float(rng.integers(150, 1000)) * np.sqrt(intensity))),
                "campaigns": rng.integers(0, N_CAMPAIGNS, int(rng.integers(1, 4))),
            }
        )
    return out


def burst(ctx: ChunkContext) -> Columns:
    """Sudden attacks: a botnet of residential devices hammering a few campaigns for minutes.

    Within an attack clicks are a Poisson process at a constant, high rate that switches on and off
    at once; a bot keeps one session for the whole attack.
    """
    seed, rng = ctx.params.seed, ctx.rng
    w0 = (ctx.t0_ms - BURST_MAX_MS) // BURST_WINDOW_MS
    w1 = (ctx.t1_ms - 1) // BURST_WINDOW_MS
    parts = []
    for attack in burst_attacks(ctx.params, w0, w1):
        lo_ms = max(ctx.t0_ms, int(attack["start_ms"]))
        hi_ms = min(ctx.t1_ms, int(attack["end_ms"]))
        if hi_ms <= lo_ms:
            continue
        k = rng.poisson(float(attack["clicks_per_s"]) * (hi_ms - lo_ms) / 1000.0)
        t = lo_ms + rng.integers(0, hi_ms - lo_ms, k)
        bot = rng.integers(0, int(attack["bots"]), k)
        w = int(attack["window"])
        key = w * BURST_KEY + bot
        hi, lo, v6 = residential_ip(seed, _S_BOTNET, key, v6_share=0.3)
        kind = unit(seed, _S_KIND, key)
        device = np.where(kind < 0.4, DESKTOP, np.where(kind < 0.8, MOBILE, APP)).astype(np.uint8)
        campaigns = np.asarray(attack["campaigns"])
        parts.append(
            clicks(
                k,
                t_ms=t,
                family=_BURST,
                actor=key,
                session=key.astype(np.uint64),
                device=device,
                ua=device_ua(device, uhash(seed, _S_UA, key)),
                ip_hi=hi,
                ip_lo=lo,
                ip_v6=v6,
                ad=ctx.pop.ads_of_campaign(rng, campaigns[rng.integers(0, campaigns.shape[0], k)]),
            )
        )
    return Columns.concat(parts, CLICK_DTYPES)


#: family name -> generator
BOT_GENERATORS: Final[dict[str, Callable[[ChunkContext], Columns]]] = {
    "fast_scraper": fast_scraper,
    "low_and_slow": low_and_slow,
    "gateway_bot": gateway_bot,
    "ip_rotator": ip_rotator,
    "stolen_account": stolen_account,
    "burst": burst,
}
