"""Serving the hand-written OpenAPI 3.1 description (agentd/schemas/openapi.yaml) as JSON.

The description is a reviewed file, not generated: it is the contract in
machine form, and tests check it against real responses.
"""
from __future__ import annotations

import functools
from pathlib import Path

import yaml
from flask import Flask, jsonify

SPEC_PATH = Path(__file__).resolve().parent.parent / "schemas" / "openapi.yaml"


@functools.lru_cache(maxsize=1)
def spec() -> dict:
    """The OpenAPI document as a dict, parsed once."""
    with open(SPEC_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def openapi_json():
    return jsonify(spec())


def register(app: Flask) -> None:
    """Serve /api/openapi.json (an open route)."""
    app.add_url_rule("/api/openapi.json", "openapi", openapi_json, methods=["GET"])
