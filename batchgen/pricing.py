"""Estimated spend, from a price table per model and resolution class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

import orjson


@dataclass(frozen=True)
class PriceTable:
    currency: str
    per_image: Mapping[str, Mapping[str, float]]

    @classmethod
    def default(cls) -> PriceTable:
        data = orjson.loads(resources.files("batchgen").joinpath("prices.json").read_bytes())
        return cls(data["currency"], data["per_image"])

    def cost(self, model: str, size_class: str, n: int) -> float:
        row = self.per_image.get(model) or self.per_image["*"]
        return round(row[size_class] * n, 6)
