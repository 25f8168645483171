"""What a model call cost, in billionths of a dollar (exact integer sums on every database).

The agent's own `model.price: {input_per_mtok, output_per_mtok}` wins; otherwise
the price list of the `genai-prices` package (its bundled snapshot: it never
fetches prices at run time). A model neither knows stays unpriced: None, never 0.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

log = logging.getLogger("agentd.pricing")

NANO = Decimal(10) ** 9
MTOK = Decimal(10) ** 6


def to_nanousd(dollars: Decimal) -> int:
    return int((dollars * NANO).to_integral_value(ROUND_HALF_EVEN))


def from_nanousd(value: int | None) -> float | None:
    """A stored cost as dollars (a JSON number), None kept."""
    return None if value is None else float(Decimal(value) / NANO)


def block_price(price: dict, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of a call at an agent's own `model.price`."""
    cost = (Decimal(str(price.get("input_per_mtok", 0))) * prompt_tokens
            + Decimal(str(price.get("output_per_mtok", 0))) * completion_tokens) / MTOK
    return to_nanousd(cost)


@lru_cache(maxsize=1)
def _genai_prices():
    # Imported on first use (about a second: pydantic models), never at module import;
    # `warm_up()` does it in the background when the app starts.
    import genai_prices
    return genai_prices


def warm_up() -> None:
    """Import the price list in a background thread, so the first turn does not wait for it."""
    # Not a daemon: an interpreter that finalizes during an import can crash; a process
    # that ends this early waits the second the import takes.
    threading.Thread(target=_safe_import, daemon=False, name="agentd-prices").start()


def _safe_import() -> None:
    try:
        _genai_prices()
    except Exception:  # noqa: BLE001 — prices then come from agent YAML only
        log.exception("could not load the genai-prices price list")


def listed_price(provider: str | None, model: str | None, prompt_tokens: int,
                 completion_tokens: int) -> int | None:
    """The cost from the maintained price list, or None when it does not know the model.

    Equal to `genai_prices.calc_price(Usage(prompt, completion), model, provider_id=provider)`,
    at a fraction of its cost (it runs on every model call): which listed model a
    (provider, model) pair is, or that it is none, is looked up once; the price in
    force now is taken from it per call (prices may change by date or time of day).
    """
    if not model:
        return None
    try:
        found = _listed_model(provider or None, model)
        if found is None:
            return None
        return to_nanousd(_total_price(found, prompt_tokens, completion_tokens))
    except Exception:  # noqa: BLE001 — a price list problem must never fail a turn
        log.warning("no price for %s/%s", provider, model, exc_info=True)
        return None


_lookups: dict[tuple, tuple | None] = {}   # (provider, model) -> (Provider, ModelInfo), None: not listed
_lookups_of: list = [None]                   # the price-list snapshot _lookups was filled from


def _listed_model(provider: str | None, model: str) -> tuple | None:
    prices = _genai_prices()
    snapshot = prices.data_snapshot.get_snapshot()
    if _lookups_of[0] is not snapshot:  # another snapshot (genai_prices.UpdatePrices): start again
        _lookups.clear()
        _lookups_of[0] = snapshot
    key = (provider, model)
    if key not in _lookups:
        try:
            # What calc_price does first (its own cache keeps hits only; a miss costs a scan).
            _lookups[key] = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            _lookups[key] = None
    return _lookups[key]


def _total_price(found: tuple, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """calc_price's `total_price` for the listed (Provider, ModelInfo) `found`, priced now."""
    prices = _genai_prices()
    listed_provider, listed_model = found
    usage = prices.Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
    now = dt.datetime.now(dt.timezone.utc)
    return listed_model.calc_price(usage, listed_provider, genai_request_timestamp=now).total_price


def _price_block(block: dict, provider: str | None, model: str | None) -> dict | None:
    """The `price` of the model block (or fallback) that made the call, if it has one."""
    candidates = [block] + list(block.get("fallbacks") or [])
    for candidate in candidates:
        if candidate.get("price") and candidate.get("provider") == provider and (
                not candidate.get("name") or candidate.get("name") == model):
            return candidate["price"]
    return None


def call_cost(block: dict, provider: str | None, model: str | None, reported_model: str | None,
              prompt_tokens: int, completion_tokens: int) -> int | None:
    """The cost of one call in nano-dollars: the agent's price, else the price list, else None."""
    price = _price_block(block, provider, model)
    if price is not None:
        return block_price(price, prompt_tokens, completion_tokens)
    for name in dict.fromkeys(n for n in (reported_model, model) if n):  # as reported, then as asked
        cost = listed_price(provider, name, prompt_tokens, completion_tokens)
        if cost is not None:
            return cost
    return None
