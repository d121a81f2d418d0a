"""A scripted click sequence with known counters: a steady human, a gateway IP and a burst."""

from __future__ import annotations

from app.contracts.events import Click

T0 = 1_795_000_000_000  # a fixed Tuesday in 2026, 10:13:20 UTC


def click(i: str, t_s: float, ip: str, session: str, user: str | None, device: str = "desktop") -> Click:
    return Click(
        click_id=i,
        event_time_ms=T0 + int(t_s * 1000),
        ip=ip,
        session_id=session,
        user_id=user,
        logged_in=user is not None,
        device_type=device,
        user_agent="Mozilla/5.0",
        ad_id="ad-1",
        campaign_id="cmp-1",
        advertiser_id="adv-1",
    )


def scripted_clicks() -> list[Click]:
    """Event-time ordered: 5 human clicks 60 s apart; 20 users behind one gateway IP; a 40-click burst."""
    clicks = [click(f"human-{k}", 60.0 * k, "192.0.2.10", "s-human", "alice") for k in range(5)]
    clicks += [
        click(f"gw-{k}", 5.0 + 12.0 * k, "198.51.100.1", f"s-gw-{k}", f"carrier-user-{k}", "mobile")
        for k in range(20)
    ]
    clicks += [
        click(f"burst-{k}", 100.0 + 0.5 * k, "203.0.113.66", "s-burst", None, "app") for k in range(40)
    ]
    return sorted(clicks, key=lambda c: c.event_time_ms)
