"""The relay's facts live in one table (``batchgen.relay``): what is added there reaches every
stage that reads it, and what the simulator says is what the classifier reads.

``tests/test_architecture.py`` fails when one of those facts is written anywhere else.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

import batchgen
from batchgen import manifest, relay
from batchgen.errors import RequestError
from batchgen.plan.plan import plan_item
from batchgen.plan.pricing import PriceTable
from batchgen.service.responses import error_from_response, parse_success
from batchgen.sim.simulator import Simulator

NEW_MODEL = "nano-banana-9"
# A model only the table knows: it takes a ratio the others need nano-banana-2 for, at its own price.
NEW = relay.Model(("1:1", "1:4"), {"512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0})


@pytest.mark.parametrize("in_table", [True, False])
def test_a_model_added_to_the_table_is_accepted_priced_and_served(
    monkeypatch: pytest.MonkeyPatch,
    threaded_simulator: Callable[..., Simulator],
    write_manifest: Callable[..., Path],
    in_table: bool,
) -> None:
    if in_table:
        monkeypatch.setattr(relay, "MODELS", {**relay.MODELS, NEW_MODEL: NEW})
    item = {
        "id": "a",
        "prompt": "a tote",
        "model": NEW_MODEL,
        "image_size": "512",
        "aspect_ratio": "1:4",
        "n": 2,
    }
    job = manifest.load(write_manifest({"job": "new", "items": [item]}))
    assert {problem.field for problem in job.warnings} == (set() if in_table else {"model", "aspect_ratio"})

    (spec,) = job.items
    planned = plan_item(spec, job.api.reference_field, PriceTable.default())
    assert planned.estimated_cost == (1.0 if in_table else relay.OTHER_MODEL_PRICES["512"] * 2)

    sim = threaded_simulator()
    answered = _post(sim, dict(planned.body))
    if in_table:
        assert isinstance(answered, bytes)
        assert len(parse_success(answered).images) == 2
    else:  # the relay has no channel for it
        assert isinstance(answered, RequestError)
        assert answered.http_status == 503
        assert NEW_MODEL in answered.message


def _post(sim: Simulator, body: dict[str, Any]) -> bytes | RequestError:
    """A request to the simulator: a success's body, or its error answer as classified."""
    request = urllib.request.Request(f"{sim.base_url}/images/generations", orjson.dumps(body), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as refused:
        return error_from_response(refused.code, dict(refused.headers), refused.read())


def _played(sim: Simulator, name: str) -> RequestError:
    """What the simulator answers a request that asks for the relay's answer ``name``, as classified."""
    answered = _post(sim, {"model": relay.DEFAULT_MODEL, "prompt": f"[sim:{name}] a mug"})
    if isinstance(answered, RequestError):
        return answered
    with pytest.raises(RequestError) as raised:
        parse_success(answered)  # an error in a 200
    return raised.value


def test_every_answer_the_simulator_plays_is_classified_as_the_table_says(
    threaded_simulator: Callable[..., Simulator],
) -> None:
    sim = threaded_simulator()
    for name, said in relay.ANSWERS.items():
        error = _played(sim, name)
        assert (error.http_status, error.error_class) == (said.status, said.means), name
        assert said.message in error.message, name


def test_the_shipped_price_file_is_made_from_the_table() -> None:
    shipped = Path(batchgen.__file__).with_name("prices.json")
    assert shipped.read_text() == relay.price_file(), "python -m batchgen.relay > batchgen/prices.json"
    loaded, default = PriceTable.load(shipped), PriceTable.default()
    assert (loaded.currency, loaded.per_image) == (default.currency, default.per_image)
    assert set(default.per_image) == {*relay.MODELS, "*"}
