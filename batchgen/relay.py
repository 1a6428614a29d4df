"""The relay's facts, in one place (docs/real-service.md): the models it serves and what each
takes, the sizes and aspect ratios it knows, the pixels Gemini answers with, the key it reads
reference images under, what an image costs, and its messages with what each one means.

The manifest's checks, the plan's prices, the classifier of answers and the simulator all read
these tables, so a new model or relay touches this file only (``batchgen/prices.json`` is made
from it: ``python -m batchgen.relay > batchgen/prices.json``). The logic that applies them stays
with its stage: the field checks in ``manifest``, the size check in ``manifest.sizes``, the
classifier in ``service.responses``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from batchgen.errors import ErrorClass

# Resolution classes (``image_size``), each with its nominal long side.
LONG_SIDE = {"512": 512, "1K": 1024, "2K": 2048, "4K": 4096}
IMAGE_SIZES = tuple(LONG_SIDE)
# `size` values the service understands, and the size class each one bills as.
SIZES = {
    "1024x1024": "1K",
    "1024x1792": "1K",
    "1792x1024": "1K",
    "512": "512",
    "1K": "1K",
    "2K": "2K",
    "4K": "4K",
}
DEFAULT_SIZE = "1K"  # what a request without a size, or with a WxH the service doesn't know, gets
WXH = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")  # any other size is sent as is
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTREME_RATIOS = ("1:4", "4:1", "1:8", "8:1")  # only some models take them (``Model.ratios``)
DEFAULT_RATIO = "1:1"  # what Gemini makes when no aspect ratio reaches it
# What Gemini answers at 1K for each aspect ratio; 2K and 4K are twice and four times these, 512
# half (README "The real service", docs/real-service.md).
GEMINI_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
GEMINI_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}  # each class's pixels against 1K's

# The key the relay reads reference images under, inside extra_fields: public integrations with
# it send this one, and it ignores keys it does not know (generating without the references), so
# it stays a setting too: api.reference_field.
REFERENCE_KEY = "reference_images"
# Keys other tools use for reference images; under any key but api.reference_field they are ignored.
REFERENCE_LIKE_KEYS = (
    REFERENCE_KEY,
    "image_urls",
    "images",
    "image",
    "image_url",
    "reference_image",
    "ref_images",
    "input_images",
)
EXTRA_FIELDS = ("image_size", "aspect_ratio")  # the extra_fields keys it documents, besides references


@dataclass(frozen=True, slots=True)
class Model:
    """One model the relay serves: what it takes, and what one image costs by size class."""

    ratios: tuple[str, ...]
    prices: Mapping[str, float]  # USD per image, estimates: check the relay's price list
    sizes: tuple[str, ...] = IMAGE_SIZES


MODELS: Mapping[str, Model] = {
    "nano-banana-2": Model(
        ASPECT_RATIOS + EXTREME_RATIOS, {"512": 0.02, "1K": 0.039, "2K": 0.06, "4K": 0.12}
    ),
    "nano-banana-pro": Model(ASPECT_RATIOS, {"512": 0.10, "1K": 0.134, "2K": 0.134, "4K": 0.24}),
}
DEFAULT_MODEL = "nano-banana-2"
# Any other model's price, high on purpose so that --max-cost errs on the safe side.
OTHER_MODEL_PRICES: Mapping[str, float] = {"512": 0.10, "1K": 0.134, "2K": 0.134, "4K": 0.24}
CURRENCY = "USD"
_PRICES_COMMENT = (
    "Estimated USD per generated image, by model and resolution class. Estimates only: check your"
    " relay's price list, copy this file, edit it, and pass it with --prices FILE or the manifest's"
    " prices: field. Unknown models use the '*' row, priced high on purpose so --max-cost errs on"
    " the safe side."
)


def model_ratios(model: str) -> tuple[str, ...]:
    """The aspect ratios ``model`` is known to take; for a model not in the table, the common ones."""
    known = MODELS.get(model)
    return known.ratios if known is not None else ASPECT_RATIOS


def model_sizes(model: str) -> tuple[str, ...]:
    """The resolution classes ``model`` is known to take; for a model not in the table, all of them."""
    known = MODELS.get(model)
    return known.sizes if known is not None else IMAGE_SIZES


def _price_rows() -> dict[str, dict[str, float]]:
    """Each model's prices, and ``*`` for any other model."""
    return {**{name: dict(model.prices) for name, model in MODELS.items()}, "*": dict(OTHER_MODEL_PRICES)}


def price_list() -> dict[str, object]:
    """The shipped price table, as ``--prices FILE`` reads one: a row per model, ``*`` for others."""
    return {"_comment": _PRICES_COMMENT, "currency": CURRENCY, "per_image": _price_rows()}


def price_file() -> str:
    """``price_list`` as ``batchgen/prices.json`` holds it: a row a line, for a reader to copy."""
    rows = ",\n".join(f"    {json.dumps(name)}: {json.dumps(row)}" for name, row in _price_rows().items())
    return (
        "{\n"
        f'  "_comment": {json.dumps(_PRICES_COMMENT)},\n'
        f'  "currency": {json.dumps(CURRENCY)},\n'
        f'  "per_image": {{\n{rows}\n  }}\n'
        "}\n"
    )


@dataclass(frozen=True, slots=True)
class Rule:
    """Words that give an error answer its class whatever its status, searched for in its message,
    type and code. The first rule that matches decides."""

    means: ErrorClass
    words: re.Pattern[str]


def _any_of(*phrases: str) -> re.Pattern[str]:
    """Any of ``phrases``, in any case."""
    return re.compile("|".join(map(re.escape, phrases)), re.IGNORECASE)


def _reasons(*reasons: str) -> str:
    """Gemini's reasons as whole words, so that ``IMAGE_SAFETY`` is not read inside another word."""
    return "|".join(rf"(?<![A-Za-z_]){reason}(?![A-Za-z_])" for reason in reasons)


# Gemini's refusal reasons (blockReason / finishReason), passed on by gateways with any status.
# Upper-case words as Gemini spells them, so that prose mentioning "safety" is not caught by them.
GEMINI_REFUSALS = (
    "SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
)
GEMINI_NO_IMAGE = ("NO_IMAGE", "IMAGE_OTHER")  # Gemini answered without an image part
# "No credit left" in the words of new-api (its 401/403 codes and Chinese messages) and of OpenAI
# (a 429 that is not a rate limit).
NO_CREDIT = (
    "insufficient_quota",
    "insufficient_user_quota",
    "pre_consume_token_quota_failed",
    "TokenStatusExhausted",
    "额度已用尽",
    "额度不足",
    "exceeded your current quota",
    "quota is not enough",
)
MESSAGE_RULES = (
    # The provider's documented messages, which arrive with status 500.
    Rule(ErrorClass.SAFETY_FILTER, _any_of("chat response contains no choices")),
    Rule(ErrorClass.NO_IMAGE, _any_of("no base64 image found in response")),
    Rule(ErrorClass.SERVER_ERROR, _any_of("failed to upload image")),
    # Before the status: these arrive as 401, 403 and 429.
    Rule(ErrorClass.QUOTA_EXHAUSTED, _any_of(*NO_CREDIT)),
    Rule(
        ErrorClass.SAFETY_FILTER,
        re.compile(_reasons(*GEMINI_REFUSALS) + "|content_filter|prompt_blocked|blocked by Gemini"),
    ),
    Rule(
        ErrorClass.SAFETY_FILTER,
        re.compile(
            r"content[_ ]policy|moderation|safety (?:system|filter)|flagged|prohibited content"
            r"|blocked by safety",
            re.IGNORECASE,
        ),
    ),
    Rule(
        ErrorClass.NO_IMAGE,
        re.compile(_reasons(*GEMINI_NO_IMAGE) + r"|no images? (?:were |was )?generated", re.IGNORECASE),
    ),
)


@dataclass(frozen=True, slots=True)
class Said:
    """An error answer in the relay's own words (new-api's shape), and the class it means."""

    status: int
    message: str
    type: str
    means: ErrorClass
    code: str = ""


# What the relay says, by the name the simulator plays it under (docs/simulator.md).
ANSWERS: Mapping[str, Said] = {
    "429": Said(429, "Rate limit reached for requests", "rate_limit_exceeded", ErrorClass.RATE_LIMITED),
    "500": Said(500, "internal server error", "server_error", ErrorClass.SERVER_ERROR),
    "503": Said(503, "the model is overloaded", "server_error", ErrorClass.SERVER_ERROR),
    "safety": Said(500, "chat response contains no choices", "upstream_error", ErrorClass.SAFETY_FILTER),
    "no_image": Said(500, "no base64 image found in response", "upstream_error", ErrorClass.NO_IMAGE),
    "upload": Said(500, "failed to upload image", "upstream_error", ErrorClass.SERVER_ERROR),
    "400": Said(400, "invalid size", "invalid_request_error", ErrorClass.INVALID_REQUEST),
    "401": Said(401, "无效的令牌", "new_api_error", ErrorClass.AUTH),
    "403": Said(403, "this key may not use this model", "new_api_error", ErrorClass.AUTH),
    "blocked": Said(
        400,
        "request blocked by Gemini API: PROHIBITED_CONTENT",
        "prompt_blocked",
        ErrorClass.SAFETY_FILTER,
        "prompt_blocked",
    ),
    "image_safety": Said(
        500,
        "upstream returned no image: finishReason=IMAGE_SAFETY",
        "upstream_error",
        ErrorClass.SAFETY_FILTER,
        "empty_response",
    ),
    "no_images": Said(500, "no images generated", "new_api_error", ErrorClass.NO_IMAGE, "empty_response"),
    "filtered": Said(200, "finish_reason: content_filter", "stop", ErrorClass.SAFETY_FILTER),
    "quota": Said(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        "insufficient_quota",
        ErrorClass.QUOTA_EXHAUSTED,
        "insufficient_quota",
    ),
    "token_exhausted": Said(
        401,
        "该令牌额度已用尽 TokenStatusExhausted[sk-abc***xyz]",
        "new_api_error",
        ErrorClass.QUOTA_EXHAUSTED,
    ),
    "user_quota": Said(
        403,
        "用户额度不足, 剩余额度: ＄0.000000",  # noqa: RUF001
        "new_api_error",
        ErrorClass.QUOTA_EXHAUSTED,
        "insufficient_user_quota",
    ),
}

# new-api's rate limits (its ModelRequestRateLimit), answered with a 429 and no Retry-After: the
# success form counts requests that succeeded, the total form every request. N may carry decimals
# (the simulator's short windows).
RATE_LIMIT_WORDS = {
    "success": "您已达到请求数限制：{minutes}分钟内最多请求{requests}次",  # noqa: RUF001
    "total": (
        "您已达到总请求数限制：{minutes}分钟内最多请求{requests}次，"  # noqa: RUF001
        "包括失败次数，请检查您的请求是否正确"  # noqa: RUF001
    ),
}
# What both forms say of the limit: N minutes, M requests.
STATED_LIMIT = re.compile(r"(\d+(?:\.\d+)?)\s*分钟内最多请求\s*(\d+)\s*次")

# new-api's answer for a model none of its channels serves; the simulator serves only ``MODELS``.
NO_CHANNEL = Said(
    503,
    "当前分组 default 下对于模型 {model} 无可用渠道",
    "new_api_error",
    ErrorClass.SERVER_ERROR,
    "model_not_found",
)


if __name__ == "__main__":
    print(price_file(), end="")
