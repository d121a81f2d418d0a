"""Ground truth: who really made a click.

Truth travels beside the click, never inside the fields the detector reads: on the wire it is the
``_truth`` object ``{"actor": "human"|"bot", "family": <family>, "actor_id": <int>}``, which
:func:`app.contracts.events.parse_click` drops; in history files it is the ``truth_actor``, ``truth_family``
and ``truth_actor_id`` columns (purchases carry ``truth_actor`` and ``truth_family`` of their click).

An actor is identified by ``(family, actor_id)``: for humans ``actor_id`` is the user's index in the
population (the same number as in ``user_id``, also when the human clicked anonymously); for a bot it
is the index of the bot within its family.

The bot families, and what SLIDR's features can and cannot see of them:

``fast_scraper``
    Data-centre IPs, non-browser or headless user agents, anonymous desktop sessions of tens to
    hundreds of clicks a second or so apart, around the clock. Visible: session and IP velocity,
    flat time of day.
``low_and_slow``
    One residential IP each, ordinary browsers, one to three clicks every couple of hours, around
    the clock. Per-entity counters look human; only the time of day (night activity) and the missing
    purchases give them away.
``gateway_bot``
    Infected phones and office PCs behind mobile-carrier CGNAT gateways and office IPs, the same IPs
    that carry hundreds of humans; every session is a fresh cookie. IP features are confounded by the
    real gateways; the sessions are faster than human ones.
``ip_rotator``
    Residential proxies: every click from a different IP of a large pool, while the session cookie is
    kept. IP features see nothing; session velocity does.
``stolen_account``
    Taken-over accounts (chosen for their high RFM score), logged in, from data-centre and proxy IPs,
    clicking fast at any hour. User velocity sees them; the weak label (high RFM => human) is wrong
    for them, on purpose. They rarely buy (card fraud), which makes a purchase label wrong too.
``burst``
    Attacks that start suddenly: a botnet of hundreds of residential IPs hammering a few campaigns for
    minutes. Visible: sudden user/IP/session volume; concentrated in time.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HUMAN", "BOT_FAMILIES", "FAMILIES", "ACTORS", "family_code"]

HUMAN: Final = "human"
BOT_FAMILIES: Final[tuple[str, ...]] = (
    "fast_scraper",
    "low_and_slow",
    "gateway_bot",
    "ip_rotator",
    "stolen_account",
    "burst",
)
#: Family code -> name; code 0 is the humans.
FAMILIES: Final[tuple[str, ...]] = (HUMAN, *BOT_FAMILIES)
#: Family code -> ``truth_actor`` (``"human"`` or ``"bot"``).
ACTORS: Final[tuple[str, ...]] = tuple(HUMAN if f == HUMAN else "bot" for f in FAMILIES)


def family_code(name: str) -> int:
    return FAMILIES.index(name)
