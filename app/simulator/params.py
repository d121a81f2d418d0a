"""The knobs of a simulation run. Same parameters and seed => the same traffic, byte for byte."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.contracts.exceptions import ConfigError

__all__ = ["SimParams", "DEFAULT_START", "REFERENCE_USERS", "BOT_ACTORS_PER_REFERENCE"]

#: History starts here unless told otherwise (a Monday), so that default runs are reproducible.
DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)

#: Bot actor counts below are for this many users; they scale linearly with ``users``.
REFERENCE_USERS = 50_000
BOT_ACTORS_PER_REFERENCE: dict[str, int] = {
    "fast_scraper": 12,
    "low_and_slow": 600,
    "gateway_bot": 30,
    "ip_rotator": 25,
    "stolen_account": 40,
    "burst": 1,  # attacks are scheduled, not actors; this scales the botnets and their intensity
}


@dataclass(frozen=True)
class SimParams:
    """Everything that shapes the traffic (written verbatim into a history's ``manifest.json``)."""

    seed: int = 42
    #: Human users in the population (the bot families scale with it).
    users: int = REFERENCE_USERS
    #: First instant of the output, epoch ms UTC.
    start_ms: int = int(DEFAULT_START.timestamp() * 1000)
    #: Length of one generation chunk in seconds: the unit of randomness, ids and memory.
    chunk_s: int = 3600
    #: Simulated seconds before ``start_ms`` whose sessions are generated and whose clicks before
    #: the start are dropped, so the output starts in steady state (no ramp of session starts).
    warmup_s: int = 1800
    #: UTC offset of the market in hours; humans' rhythm follows local time.
    tz_offset_h: float = 0.0
    #: Multiplier on the number of bots of every family (0 = humans only).
    bot_scale: float = 1.0
    #: Multiplier on purchase delays and on the delay of RFM updates (live mode shrinks them).
    purchase_delay_scale: float = 1.0
    #: Prefix of click, session and purchase ids; empty = derived from seed and chunk length.
    id_prefix: str = ""
    #: Per-family bot actor counts at REFERENCE_USERS users (override to shape a scenario).
    bot_actors: dict[str, int] = field(default_factory=lambda: dict(BOT_ACTORS_PER_REFERENCE))

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ConfigError("users must be >= 1")
        if self.chunk_s < 1 or (3600 % self.chunk_s and self.chunk_s % 3600):
            raise ConfigError("chunk_s must divide an hour or be a whole number of hours")
        if self.warmup_s < 0 or self.bot_scale < 0 or self.purchase_delay_scale <= 0:
            raise ConfigError("warmup_s and bot_scale must be >= 0, purchase_delay_scale > 0")
        if not 0 <= self.seed < 2**63:
            raise ConfigError("seed must be in [0, 2**63)")
        unknown = set(self.bot_actors) - set(BOT_ACTORS_PER_REFERENCE)
        if unknown:
            raise ConfigError(f"unknown bot families: {', '.join(sorted(unknown))}")

    @property
    def chunk_ms(self) -> int:
        return self.chunk_s * 1000

    @property
    def prefix(self) -> str:
        return self.id_prefix or f"{self.seed}.{self.chunk_s}."

    def bots(self, family: str) -> int:
        """Number of actors of a bot family for this population (at least 1 unless bot_scale is 0)."""
        base = self.bot_actors.get(family, BOT_ACTORS_PER_REFERENCE[family])
        if self.bot_scale == 0 or base == 0:
            return 0
        return max(1, round(base * self.bot_scale * self.users / REFERENCE_USERS))

    @property
    def scale(self) -> float:
        """Population size relative to the reference (scales shared infrastructure and bursts)."""
        return self.users / REFERENCE_USERS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
