"""Estimated spend, from a price table per model and resolution class.

The shipped table holds estimates (the relay's prices in ``batchgen.relay``, shipped as
``batchgen/prices.json`` for users to copy); a user's own table (``--prices FILE`` or the
manifest's ``prices:``) replaces it. Format, JSON or YAML:

    currency: USD
    per_image:
      some-model:   {"512": 0.02, 1K: 0.039, 2K: 0.06, 4K: 0.12}
      "*":          {"512": 0.10, 1K: 0.134, 2K: 0.134, 4K: 0.24}   # any other model

A model without a row, in a table without a ``*`` row, is priced at the
highest price of its class, so ``--max-cost`` errs on the safe side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batchgen import relay
from batchgen.errors import UsageError

# How an estimate names the shipped table: the file made from the relay's prices, for users to copy.
SHIPPED = "batchgen/prices.json"


@dataclass(frozen=True)
class PriceTable:
    currency: str
    per_image: Mapping[str, Mapping[str, float]]
    source: str = SHIPPED

    @classmethod
    def default(cls) -> PriceTable:
        """The relay's own prices (estimates)."""
        return cls.from_data(relay.price_list(), SHIPPED)

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsageError(f"price table {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)  # JSON is YAML too
        except yaml.YAMLError as exc:
            raise UsageError(f"price table {path}: not valid JSON or YAML ({exc})") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, source: str) -> PriceTable:
        def bad(message: str) -> UsageError:
            return UsageError(f"price table {source}: {message}")

        if not isinstance(data, dict) or not isinstance(data.get("per_image"), dict) or not data["per_image"]:
            raise bad("needs a per_image mapping of model -> {512, 1K, 2K, 4K: price}")
        table: dict[str, dict[str, float]] = {}
        for model, row in data["per_image"].items():
            if not isinstance(row, dict):
                raise bad(f"per_image.{model} must map 512, 1K, 2K and 4K to prices")
            prices = {str(k): v for k, v in row.items()}
            missing = [size for size in relay.IMAGE_SIZES if size not in prices]
            if missing:
                raise bad(f"per_image.{model} has no price for {', '.join(missing)}")
            for size in relay.IMAGE_SIZES:
                value = prices[size]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise bad(f"per_image.{model}.{size} must be a price of 0 or more, not {value!r}")
            table[str(model)] = {size: float(prices[size]) for size in relay.IMAGE_SIZES}
        currency = data.get("currency", "USD")
        return cls(str(currency), table, source)

    def cost(self, model: str, size_class: str, n: int) -> float:
        row = self.per_image.get(model) or self.per_image.get("*")
        price = row[size_class] if row else max(r[size_class] for r in self.per_image.values())
        return round(price * n, 6)
