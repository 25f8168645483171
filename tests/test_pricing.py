"""Listed prices (agentd.operators.pricing) equal genai-prices' own calc_price, for every listed model.

pricing.py looks a (provider, model) pair up once (misses too) and prices each call
from what it found; these tests hold it to the package's own answer.
"""
from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot

from agentd.operators import pricing

COUNTS = [(0, 0), (1, 0), (0, 1), (17, 350), (1_000, 1_000), (199_999, 1), (200_001, 4_096), (3_000_000, 70_000)]


def _expected(provider, model, prompt, completion):
    try:
        result = genai_prices.calc_price(genai_prices.Usage(input_tokens=prompt, output_tokens=completion),
                                         model, provider_id=provider)
    except LookupError:
        return None
    return pricing.to_nanousd(Decimal(result.total_price))


def _listed_pairs():
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            yield provider.id, model.id


def test_every_listed_model_costs_what_calc_price_says():
    pairs = list(_listed_pairs())
    assert len(pairs) > 100
    checked = 0
    for provider, model in pairs:
        for prompt, completion in COUNTS:
            assert pricing.listed_price(provider, model, prompt, completion) == \
                _expected(provider, model, prompt, completion), (provider, model, prompt, completion)
            checked += 1
    assert checked == len(pairs) * len(COUNTS)


@pytest.mark.parametrize("provider, model", [
    ("openai", "gpt-4o-mini"), (None, "gpt-4o"), ("anthropic", "claude-sonnet-4-5"),   # tiered prices
    ("openai", "GPT-4O"), ("litellm", "openai/gpt-4o"), ("openai", "not-a-listed-model"),
    ("no-such-provider", "gpt-4o"), (None, "t50"), ("", "gpt-4o")])
def test_asked_twice_the_same_answer_as_calc_price(provider, model):
    for _ in range(2):  # the second time from the lookup kept by the first
        for prompt, completion in COUNTS:
            assert pricing.listed_price(provider, model, prompt, completion) == \
                _expected(provider or None, model, prompt, completion)


def test_a_model_the_list_does_not_know_stays_unpriced():
    assert pricing.listed_price("openai", "not-a-listed-model", 10, 10) is None
    assert pricing.listed_price("openai", None, 10, 10) is None
    assert pricing.call_cost({"provider": "openai", "name": "t50"}, "openai", "t50", "t50", 10, 10) is None

