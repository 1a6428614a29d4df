"""The simulator's settings and the faults it knows, without the server: the command line and a
run's options name them, and neither should have to import aiohttp's server to do so."""

from __future__ import annotations

from dataclasses import dataclass

# Faults a random draw picks from: the ones a healthy client recovers from by retrying.
TRANSIENT_FAULTS = ("429", "500", "502", "503", "drop", "cut", "truncated")
ALL_FAULTS = (
    *TRANSIENT_FAULTS,
    "safety",
    "no_image",
    "upload",
    "400",
    "401",
    "403",
    "html",
    "badb64",
    "notimage",
    "empty",
    "slow",
    # The relay's own answers (docs/real-service.md).
    "blocked",  # new-api's 400 prompt_blocked: Gemini refused the prompt
    "image_safety",  # a 500 carrying Gemini's finishReason IMAGE_SAFETY
    "no_images",  # Gemini answered without an image part
    "filtered",  # a 200 whose body is an error: content_filter
    "quota",  # OpenAI-style 429 insufficient_quota
    "token_exhausted",  # new-api's 401: this key's quota is used up
    "user_quota",  # new-api's 403 insufficient_user_quota
    "504",  # the gateway gave up waiting; the upstream finished the image (billed) anyway
    "524",  # a CDN gave up after 100 s; likewise billed
    "413",  # the proxy in front refused the body
    "deadlink",  # success, as a link that cannot be fetched (billed)
    "flakylink",  # success, as a link whose first fetch fails (billed)
)
RESPONSE_SHAPES = ("asked", "b64", "dataurl", "url")
# Fields a relay may lose on the way to Gemini, which then makes its default: 1K, square
# (docs/real-service.md, "What arrived: the size check").
DROPPABLE_FIELDS = ("image_size", "aspect_ratio")
RATE_FORMS = ("success", "total")  # new-api's two limits: successes, or every request
# Gemini's Pro and 2 may answer JPEG where PNG was expected (docs/real-service.md).
IMAGE_FORMATS = ("png", "jpeg", "alternate")  # alternate: a prompt's 1st, 3rd... take PNG, the others JPEG


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = TRANSIENT_FAULTS
    seed: int = 0
    payload_kb: int = 0  # pad each PNG to about this size; 0: the bare image
    retry_after_s: int = 1
    slow_ms: float = 10_000.0  # how long a "slow" fault stalls
    api_key: str | None = None  # when set, any other key gets 401
    response: str = "asked"  # b64, dataurl, url: answer so whatever was asked; asked: as response_format says
    max_body_mb: float | None = None  # like the proxy in front of a relay: 413 for a larger body
    link_failures: int = 1  # how many fetches of a "flakylink" link fail before one works
    dropped_fields: tuple[str, ...] = ()  # of DROPPABLE_FIELDS: answer as if the request had not said them
    record_bodies: bool = False  # keep every request body in stats.bodies (tests look at what was sent)
    rate_limit: int | None = None  # new-api's limit: at most this many requests per rate window (429 over it)
    rate_window_ms: float = 60_000.0  # its sliding window (new-api: whole minutes; here, any length)
    rate_form: str = "success"  # success: count successes, when they finish; total: every request
    rate_headers: bool = False  # x-ratelimit-*-requests on every answer, as OpenAI-style gateways send
    image_format: str = "png"  # of IMAGE_FORMATS: the format of the pictures it answers with

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(ALL_FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(ALL_FAULTS)}")
        dropped = set(self.dropped_fields) - set(DROPPABLE_FIELDS)
        if dropped:
            raise ValueError(f"cannot drop {sorted(dropped)}; fields to drop: {', '.join(DROPPABLE_FIELDS)}")
        if self.max_body_mb is not None and not self.max_body_mb > 0:
            raise ValueError(f"max body must be above 0 MB, not {self.max_body_mb:g}")
        if self.link_failures < 0:
            raise ValueError(f"link failures must be 0 or more, not {self.link_failures}")
        if self.response not in RESPONSE_SHAPES:
            raise ValueError(f"response must be one of {', '.join(RESPONSE_SHAPES)}, not {self.response!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"image format must be one of {', '.join(IMAGE_FORMATS)}, not {self.image_format!r}"
            )
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"rate limit must be at least 1 request, not {self.rate_limit}")
        if not self.rate_window_ms > 0:
            raise ValueError(f"rate window must be above 0 ms, not {self.rate_window_ms:g}")
        if self.rate_form not in RATE_FORMS:
            raise ValueError(f"rate form must be one of {', '.join(RATE_FORMS)}, not {self.rate_form!r}")
        if self.rate_headers and self.rate_limit is None:
            raise ValueError("rate headers need a rate limit to count against")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, not {self.fault_rate}")
