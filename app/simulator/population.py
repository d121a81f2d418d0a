"""The population: users, accounts with RFM scores, devices, user agents, IPs and the ad catalogue.

Nothing here is stored per user. Every attribute of user ``i`` is a hash of ``(seed, attribute, i)``,
so a population of fifty thousand or a hundred million users costs the same memory, any chunk of
time can be generated without the others, and the same user looks the same in history and live.

IPs are held as integers (``hi``, ``lo``, ``v6``; an IPv4 address is ``lo``) and only become text in
:func:`app.simulator.encode.format_ips`. The address plan:

* households (about two users each) have a residential IPv4 address, or an IPv6 one for 30 %;
* four mobile carriers put their IPv4 subscribers behind CGNAT gateways: a few public addresses per
  carrier, each carrying hundreds of users a day (the gateway a phone gets changes every few hours);
  IPv6-enabled carriers give each device its own address instead;
* offices share one IPv4 address among all employees (a handful to a few hundred);
* data centres, residential proxies and botnets have ranges of their own (see :mod:`.bots`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa

from app.simulator import encode
from app.simulator.encode import uhash, unit
from app.simulator.params import SimParams

__all__ = [
    "Population",
    "DESKTOP",
    "MOBILE",
    "APP",
    "DEVICE_NAMES",
    "USER_AGENTS",
    "UA_GROUPS",
    "N_ADS",
    "ADS_PER_CAMPAIGN",
    "CAMPAIGNS_PER_ADVERTISER",
    "rfm_score",
    "RESIDENTIAL_V4",
    "RESIDENTIAL_V6",
    "BUSINESS_V4",
    "DATACENTRE_V4",
]

DESKTOP, MOBILE, APP = 0, 1, 2
DEVICE_NAMES: Final = ("desktop", "mobile", "app")

# --------------------------------------------------------------------------------------------------
# User agents: one dictionary, grouped by what runs them
# --------------------------------------------------------------------------------------------------

_UA: Final[dict[str, tuple[str, ...]]] = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36 Edg/129.0.0.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.7; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
    ),
    "mobile": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.86 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.86 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.6668.100 Mobile Safari/537.36",
        "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    "app": (
        "ShopApp/24.21.0 (iPhone16,1; iOS 18.1; Scale/3.00)",
        "ShopApp/24.20.2 (iPhone14,5; iOS 17.6.1; Scale/3.00)",
        "ShopApp/24.21.0 (Linux; U; Android 14; SM-S921B Build/UP1A.231005.007) okhttp/4.12.0",
        "ShopApp/24.19.1 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001) okhttp/4.12.0",
    ),
    "script": (
        "python-requests/2.32.3",
        "curl/8.10.1",
        "Go-http-client/1.1",
        "Scrapy/2.11.2 (+https://scrapy.org)",
    ),
    "headless": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/130.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/129.0.0.0 Safari/537.36",
    ),
}
USER_AGENTS: Final[tuple[str, ...]] = tuple(ua for group in _UA.values() for ua in group)
#: group name -> (first index in USER_AGENTS, count)
UA_GROUPS: Final[dict[str, tuple[int, int]]] = {}
_at = 0
for _name, _group in _UA.items():
    UA_GROUPS[_name] = (_at, len(_group))
    _at += len(_group)
del _at, _name, _group
_DEVICE_UA_GROUP: Final = ("desktop", "mobile", "app")


def ua_index(group: str, h: np.ndarray) -> np.ndarray:
    """A user agent of ``group`` picked by the hash ``h``."""
    first, count = UA_GROUPS[group]
    return (first + (h % np.uint64(count)).astype(np.int64)).astype(np.int32)


def device_ua(device: np.ndarray, h: np.ndarray) -> np.ndarray:
    """A browser/app user agent that fits each device type, picked by the hash ``h``."""
    out = np.empty(device.shape[0], dtype=np.int32)
    for code, group in enumerate(_DEVICE_UA_GROUP):
        sel = device == code
        out[sel] = ua_index(group, h[sel])
    return out


# --------------------------------------------------------------------------------------------------
# Ad catalogue: advertiser -> campaigns -> ads, laid out by index
# --------------------------------------------------------------------------------------------------

N_ADVERTISERS: Final = 200
CAMPAIGNS_PER_ADVERTISER: Final = 10
ADS_PER_CAMPAIGN: Final = 10
N_CAMPAIGNS: Final = N_ADVERTISERS * CAMPAIGNS_PER_ADVERTISER
N_ADS: Final = N_CAMPAIGNS * ADS_PER_CAMPAIGN

# --------------------------------------------------------------------------------------------------
# Address plan (first octets that look like the kind of network they stand for)
# --------------------------------------------------------------------------------------------------

RESIDENTIAL_V4 = np.array(
    [24, 47, 50, 67, 68, 69, 71, 73, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90,
     91, 92, 93, 94, 95, 96, 97, 98, 99, 108, 109, 112, 114, 115, 118, 121, 123, 124, 125, 174, 175,
     176, 177, 178, 179, 180, 181, 186, 187, 188, 189, 190, 191, 201],
    dtype=np.uint64,
)  # fmt: skip
BUSINESS_V4 = np.array([12, 38, 63, 64, 65, 66, 70, 74, 128, 129, 130, 131, 132, 144, 148, 149, 152, 155,
                         160, 170, 193, 194, 195, 199, 204, 205, 206, 207, 208, 209, 212, 213, 216, 217],
                        dtype=np.uint64)  # fmt: skip
DATACENTRE_V4 = np.array([3, 13, 18, 34, 35, 44, 52, 54, 104, 107, 138, 139, 146, 157, 159, 161, 164, 167],
                          dtype=np.uint64)  # fmt: skip
RESIDENTIAL_V6 = np.array([0x2A02, 0x2601, 0x2003, 0x2A01, 0x2605, 0x2804], dtype=np.uint64)

# Mobile carriers: market share, IPv4 /16 of the CGNAT pool, IPv6 /32 prefix, share of traffic on IPv6.
_CARRIER_SHARE = np.array([0.35, 0.30, 0.20, 0.15])
_CARRIER_V4_16 = np.array([(172 << 8) | 56, (107 << 8) | 77, (166 << 8) | 205, (100 << 8) | 128],
                          dtype=np.uint64)  # fmt: skip
_CARRIER_V6_32 = np.array([0x2607FB90, 0x26001000, 0x2600380F, 0x2A0D5600], dtype=np.uint64)
_CARRIER_V6_SHARE = np.array([0.6, 0.35, 0.0, 0.2])
#: Users per CGNAT public address (over a day, each gateway carries roughly this many users).
USERS_PER_GATEWAY: Final = 350
_GATEWAY_STICKY_MS: Final = 4 * 3_600_000


def nonzero_groups(x: np.ndarray) -> np.ndarray:
    """Force every 16-bit group of ``x`` to be non-zero (see :func:`encode.format_ips`)."""
    x = np.asarray(x, dtype=np.uint64)
    for s in range(0, 64, 16):
        g = (x >> np.uint64(s)) & np.uint64(0xFFFF)
        x = np.where(g == 0, x | np.uint64(1 << s), x)
    return x


def v4_in(first_octets: np.ndarray, h: np.ndarray) -> np.ndarray:
    """An IPv4 address (as lo) with a first octet from the list and host part .1-.254."""
    first = first_octets[(h % np.uint64(first_octets.shape[0])).astype(np.int64)]
    mid = (h >> np.uint64(20)) & np.uint64(0xFFFF)
    last = np.uint64(1) + ((h >> np.uint64(40)) % np.uint64(254))
    return (first << np.uint64(24)) | (mid << np.uint64(8)) | last


def v6_in(prefix16: np.ndarray, h_hi: np.ndarray, h_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An IPv6 address: a 16-bit prefix from the list, hashed network and interface parts."""
    pre = prefix16[(h_hi % np.uint64(prefix16.shape[0])).astype(np.int64)]
    hi = nonzero_groups((pre << np.uint64(48)) | (h_hi >> np.uint64(16)))
    return hi, nonzero_groups(h_lo)


# Salts: one per attribute, so that attributes are independent of each other.
(
    _S_ACCOUNT, _S_SEGMENT, _S_FREQ, _S_REC, _S_MON, _S_CHRONO1, _S_CHRONO2, _S_CHRONO3, _S_DEVICE,
    _S_HOME, _S_HOME6, _S_HOMEV6, _S_CARRIER, _S_MOBV6, _S_OFFICE, _S_OFFICE_IDX, _S_OFFICE_IP, _S_UA,
    _S_GATEWAY, _S_PERM,
) = range(1, 21)  # fmt: skip


@dataclass(frozen=True)
class Tier:
    """A slice of the users with the same activity (sessions follow the rhythm on top of it)."""

    first: int
    count: int
    clicks_per_day: float


#: (share of users, ad clicks per day) from light to power users: about 9.5 clicks/user/day overall.
USER_TIERS: Final = ((0.50, 3.0), (0.35, 10.0), (0.13, 25.0), (0.02, 60.0))


def rfm_score(recency_days: np.ndarray, frequency: np.ndarray, monetary: np.ndarray) -> np.ndarray:
    """Recency/frequency/monetary -> a 0..1 score (higher = more valuable, more surely human)."""
    r = np.exp(-np.asarray(recency_days, dtype=np.float64) / 45.0)
    f = 1.0 - np.exp(-np.asarray(frequency, dtype=np.float64) / 8.0)
    m = 1.0 - np.exp(-np.asarray(monetary, dtype=np.float64) / 600.0)
    return np.clip(0.35 * r + 0.35 * f + 0.30 * m, 0.0, 1.0)


class Population:
    """Hash-derived attributes of ``params.users`` human users (indices ``0 .. users-1``)."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.seed = params.seed
        self.n = params.users
        tiers = []
        first = 0
        for k, (share, cpd) in enumerate(USER_TIERS):
            count = self.n - first if k == len(USER_TIERS) - 1 else round(self.n * share)
            tiers.append(Tier(first, count, cpd))
            first += count
        self.tiers: tuple[Tier, ...] = tuple(t for t in tiers if t.count > 0)
        # Offices: about 30 % of users work in one; sizes are skewed (few large, many small).
        self.n_offices = max(2, round(self.n * 0.3 / 60))
        self.n_gateways = np.maximum(2, np.round(self.n * 0.55 * _CARRIER_SHARE / USERS_PER_GATEWAY)).astype(
            np.int64
        )
        # user_id numbers are a bijective scramble of the index, so ids carry no hint of the tier
        self._perm_a = _coprime_multiplier(self.n, self.seed)
        self._perm_b = int(uhash(self.seed, _S_PERM, 0)) % self.n
        # Zipf popularity of ads (rank -> ad by a hash permutation of the catalogue)
        weights = 1.0 / np.arange(1, N_ADS + 1) ** 1.05
        self._ad_cdf = np.cumsum(weights / weights.sum())
        self._ad_by_rank = np.argsort(uhash(self.seed, 999, np.arange(N_ADS))).astype(np.int32)
        self.user_agents: pa.StringArray = encode.pool(USER_AGENTS)
        #: derived tables a generator computes once per run (e.g. the accounts each thief holds)
        self.memo: dict[str, np.ndarray] = {}

    # ---- identity -------------------------------------------------------------------------------

    def user_number(self, idx: np.ndarray) -> np.ndarray:
        """The number in a user's public id (``u`` + 10 digits); also the human's truth actor id."""
        return (np.asarray(idx, dtype=np.int64) * self._perm_a + self._perm_b) % self.n

    # ---- accounts and RFM ---------------------------------------------------------------------

    def has_account(self, idx: np.ndarray) -> np.ndarray:
        return unit(self.seed, _S_ACCOUNT, idx) < 0.72

    def rfm_base(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pre-run purchase history: (recency days, frequency, monetary) per account.

        Segments: engaged customers (35 %), casual buyers (45 %), accounts that never bought (20 %).
        """
        seg = unit(self.seed, _S_SEGMENT, idx)
        uf, ur, um = (unit(self.seed, s, idx) for s in (_S_FREQ, _S_REC, _S_MON))
        engaged = seg < 0.35
        casual = (seg >= 0.35) & (seg < 0.80)
        freq = np.where(engaged, 5 + np.floor(uf * 55), np.where(casual, 1 + np.floor(uf * 6), 0)).astype(
            np.int64
        )
        recency = np.where(engaged, 0.5 + ur * 30, np.where(casual, 10 + ur * 190, 365.0))
        per_order = 20.0 * np.exp(um * 2.0)  # 20 .. 148 per order
        monetary = np.round(freq * per_order, 2)
        return np.round(recency, 3), freq, monetary

    def purchase_propensity(self, idx: np.ndarray) -> np.ndarray:
        """Relative chance that a click of this human ends in a purchase (engaged buyers buy more)."""
        seg = unit(self.seed, _S_SEGMENT, idx)
        prop = np.where(seg < 0.35, 2.5, np.where(seg < 0.80, 1.0, 0.4))
        return np.where(self.has_account(idx), prop, 0.6)

    # ---- habits --------------------------------------------------------------------------------

    def chronotype_h(self, idx: np.ndarray) -> np.ndarray:
        """Personal shift of the daily rhythm in hours (about N(0, 1), within +-3)."""
        s = sum(unit(self.seed, salt, idx) for salt in (_S_CHRONO1, _S_CHRONO2, _S_CHRONO3))
        return (s - 1.5) * 2.0

    def primary_device(self, idx: np.ndarray) -> np.ndarray:
        u = unit(self.seed, _S_DEVICE, idx)
        return np.where(u < 0.38, DESKTOP, np.where(u < 0.80, MOBILE, APP)).astype(np.uint8)

    def login_prob(self, device: np.ndarray) -> np.ndarray:
        """Chance that an account holder's session on this device is logged in."""
        return np.array([0.62, 0.5, 0.95])[device]

    def user_agent(self, idx: np.ndarray, device: np.ndarray) -> np.ndarray:
        return device_ua(device, uhash(self.seed, _S_UA, np.asarray(idx) * 3 + device))

    # ---- addresses -----------------------------------------------------------------------------

    def home_ip(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        household = np.asarray(idx, dtype=np.int64) // 2
        h = uhash(self.seed, _S_HOME, household)
        v6 = unit(self.seed, _S_HOMEV6, household) < 0.30
        hi6, lo6 = v6_in(RESIDENTIAL_V6, uhash(self.seed, _S_HOME6, household), h)
        lo = np.where(v6, lo6, v4_in(RESIDENTIAL_V4, h))
        return np.where(v6, hi6, np.uint64(0)), lo, v6

    def carrier(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.cumsum(_CARRIER_SHARE), unit(self.seed, _S_CARRIER, idx), side="right")

    def mobile_ip(self, idx: np.ndarray, t_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The address a phone shows: its own IPv6 on v6 carriers, else a CGNAT gateway that changes
        every few hours (so over a day a gateway carries hundreds of different users)."""
        idx = np.asarray(idx, dtype=np.int64)
        c = np.minimum(self.carrier(idx), len(_CARRIER_SHARE) - 1)
        v6 = unit(self.seed, _S_MOBV6, idx) < _CARRIER_V6_SHARE[c]
        period = np.asarray(t_ms, dtype=np.int64) // _GATEWAY_STICKY_MS
        g = uhash(self.seed, _S_GATEWAY, idx * 1_000_003 + period) % self.n_gateways[c].astype(np.uint64)
        lo4 = self.gateway_ip(c, g.astype(np.int64))
        h6 = uhash(self.seed, _S_MOBV6 + 100, idx)
        hi6 = nonzero_groups((_CARRIER_V6_32[c] << np.uint64(32)) | (h6 & np.uint64(0xFFFFFFFF)))
        lo6 = nonzero_groups(uhash(self.seed, _S_MOBV6 + 200, idx))
        return np.where(v6, hi6, np.uint64(0)), np.where(v6, lo6, lo4), v6

    def gateway_ip(self, carrier: np.ndarray, gateway: np.ndarray) -> np.ndarray:
        """Public IPv4 address number ``gateway`` of a carrier's CGNAT pool."""
        base = (_CARRIER_V4_16[carrier] << np.uint64(16)) + np.uint64(256)
        return base + np.asarray(gateway, dtype=np.uint64) * np.uint64(3) + np.uint64(1)

    def office(self, idx: np.ndarray) -> np.ndarray:
        """Office index, or -1 for users who do not work in one."""
        works = unit(self.seed, _S_OFFICE, idx) < 0.30
        o = np.floor(self.n_offices * unit(self.seed, _S_OFFICE_IDX, idx) ** 1.8).astype(np.int64)
        return np.where(works, o, -1)

    def office_ip(self, office: np.ndarray) -> np.ndarray:
        return v4_in(BUSINESS_V4, uhash(self.seed, _S_OFFICE_IP, office))

    def random_gateway(self, h: np.ndarray) -> np.ndarray:
        """A CGNAT gateway address picked by hash (weighted by carrier share), for bots on phones."""
        c = np.searchsorted(
            np.cumsum(_CARRIER_SHARE), (h >> np.uint64(11)).astype(np.float64) / 2.0**53, side="right"
        )
        c = np.minimum(c, len(_CARRIER_SHARE) - 1)
        g = (h % np.uint64(1 << 20)) % self.n_gateways[c].astype(np.uint64)
        return self.gateway_ip(c, g.astype(np.int64))

    # ---- ads -----------------------------------------------------------------------------------

    def popular_ads(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Ads drawn by popularity (Zipf), as humans see them."""
        rank = np.searchsorted(self._ad_cdf, rng.random(n), side="right")
        return self._ad_by_rank[np.minimum(rank, N_ADS - 1)]

    @staticmethod
    def ads_of_campaign(rng: np.random.Generator, campaign: np.ndarray) -> np.ndarray:
        return (
            np.asarray(campaign, dtype=np.int64) * ADS_PER_CAMPAIGN
            + rng.integers(0, ADS_PER_CAMPAIGN, np.shape(campaign))
        ).astype(np.int32)


def _coprime_multiplier(n: int, seed: int) -> int:
    a = int(n * 0.6180339887) | 1
    a += seed % 97
    while math.gcd(a, n) != 1:
        a += 1
    return a % n if n > 1 else 0
