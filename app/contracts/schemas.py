"""JSON Schema (draft 2020-12) of every event contract, built from the limits in :mod:`app.contracts.events`.

Producers in other languages validate against the files in ``schemas/`` (``ivt schemas`` writes
them; a test fails when they drift from the code). The Python parsers stay the authority: a schema
cannot say "logged_in implies user_id" as readably, so that rule is also spelled out in the
description, and the time range check lives in the parser only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from app.contracts.events import DEVICE_TYPES, MAX_ID_LEN, MAX_REASON_LEN, MAX_USER_AGENT_LEN

__all__ = ["all_schemas", "write_schemas", "SCHEMA_DIR"]

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _id(max_len: int = MAX_ID_LEN) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_len}


_TIME = {"type": "string", "format": "date-time", "maxLength": 40, "description": "RFC 3339 with UTC offset"}


def _obj(title: str, description: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": _DRAFT,
        "$id": f"ivt/{title}.schema.json",
        "title": title,
        "description": description,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": True,
    }


def click_schema() -> dict[str, Any]:
    props = {
        "click_id": _id(),
        "event_time": _TIME,
        "ip": {"type": "string", "maxLength": 45, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        "session_id": _id(),
        "user_id": {"anyOf": [_id(), {"type": "null"}]},
        "logged_in": {"type": "boolean"},
        "device_type": {"enum": list(DEVICE_TYPES)},
        "user_agent": _id(MAX_USER_AGENT_LEN),
        "ad_id": _id(),
        "campaign_id": _id(),
        "advertiser_id": _id(),
    }
    schema = _obj(
        "click",
        "One ad click on the `clicks` topic. logged_in=true requires a non-null user_id. Key by IP to "
        "save the repartition hop. Fields starting with '_' (the simulator's `_truth`) are never read.",
        props,
        [k for k in props if k != "user_id"],
    )
    schema["if"] = {"properties": {"logged_in": {"const": True}}}
    schema["then"] = {"properties": {"user_id": _id()}, "required": ["user_id"]}
    return schema


def purchase_schema() -> dict[str, Any]:
    props = {
        "purchase_id": _id(),
        "click_id": _id(),
        "user_id": {"anyOf": [_id(), {"type": "null"}]},
        "event_time": _TIME,
        "amount": {"type": "number", "minimum": 0, "maximum": 1e9},
    }
    return _obj(
        "purchase",
        "A purchase attributed to the click it names (`purchases` topic, keyed by click id).",
        props,
        ["purchase_id", "click_id", "event_time", "amount"],
    )


def account_rfm_schema() -> dict[str, Any]:
    props = {
        "user_id": _id(),
        "rfm_score": {"type": "number", "minimum": 0, "maximum": 1},
        "recency_days": {"type": "number", "minimum": 0, "maximum": 1e5},
        "frequency": {"type": "integer", "minimum": 0, "maximum": 10**9},
        "monetary": {"type": "number", "minimum": 0, "maximum": 1e12},
        "updated_at": _TIME,
    }
    return _obj(
        "account-rfm",
        "Latest RFM score of an account (compacted `account-rfm` topic, keyed by user id).",
        props,
        list(props),
    )


def verdict_schema() -> dict[str, Any]:
    props = {
        "click_id": _id(),
        "event_time": _TIME,
        "decision": {"enum": ["valid", "invalid"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "slice": _id(32),
        "model_version": _id(),
        "revision": {"type": "integer", "minimum": 0},
        "source": {"enum": ["live", "replay"]},
        "decided_at": _TIME,
        "feature_version": _id(32),
        "features": {"type": "array", "items": {"type": "number"}},
        "job_id": {"anyOf": [_id(), {"type": "null"}]},
        "category": {"enum": ["GIVT", "SIVT", None]},
        "reasons": {"type": "array", "items": {"type": "string"}},
    }
    return _obj(
        "verdict",
        "Decision on one click (`verdicts` topic, keyed by click id). Billing keeps, per click, the "
        "verdict with the highest revision: 0 is live, corrections from replay are higher.",
        props,
        [k for k in props if k not in ("job_id", "category", "reasons")],
    )


def model_control_schema() -> dict[str, Any]:
    props = {
        "model_version": _id(),
        "action": {"enum": ["promote", "rollback"]},
        "at": _TIME,
        "reason": {"anyOf": [_id(MAX_REASON_LEN), {"type": "null"}]},
    }
    return _obj(
        "model-control",
        "The active model, announced on the compacted `model-control` topic under key `active`.",
        props,
        ["model_version", "action", "at"],
    )


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every contract."""
    return {
        "click.schema.json": click_schema(),
        "purchase.schema.json": purchase_schema(),
        "account-rfm.schema.json": account_rfm_schema(),
        "verdict.schema.json": verdict_schema(),
        "model-control.schema.json": model_control_schema(),
    }


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = folder / name
        path.write_bytes(render(schema))
        written.append(path)
    return written
