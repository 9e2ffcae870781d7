"""Input validation and body building, models and structuring, the error table: plain functions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kolbo_async as k
from kolbo_async._convert import structure
from kolbo_async._exceptions import make_status_error, status_error_class
from kolbo_async._requests import image_to_video_body, text_to_video_body, validate_generation_id

ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300), st.binary(max_size=20), st.lists(st.text(max_size=5), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


#: One acceptable value per field, for the fuzz to repair the field it was told is wrong.
VALID: dict[str, Any] = {
    "prompt": "a cat", "model": "Kling-V2", "aspect_ratio": "16:9", "duration": 5,
    "enhance_prompt": True, "visual_dna_ids": ["a"],
    "reference_images": ["https://x.example/r.png"], "extra_body": {"preset_id": "p"},
}



def _ratio(value: object) -> bool:
    if value in ("auto", "adaptive"):
        return True
    if value in ("auto", "adaptive"):
        return True
    parts = value.split(":") if isinstance(value, str) else []
    return len(parts) == 2 and all(re.fullmatch(r"\d+(\.\d+)?", p) and float(p) > 0 for p in parts)


#: DESIGN.md's rules for the fields whose validity is clear-cut: what an accepted call held.
ACCEPTABLE: dict[str, Callable[[Any], bool]] = {
    "prompt": lambda v: isinstance(v, str) and bool(v.strip()),
    "model": lambda v: isinstance(v, str) and bool(v.strip()),
    "duration": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    ),
    "enhance_prompt": lambda v: isinstance(v, bool),
    "aspect_ratio": _ratio,
}


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` three times in four, else anything: mostly one bad field at a time, so the
    fuzz sees valid calls and each kind of refusal (a plain one_of would be all noise)."""
    return st.integers(0, 3).flatmap(lambda i: good if i else ANYTHING)


def _field(name: str) -> st.SearchStrategy[Any]:
    """Absent or valid, or (one time in four) anything."""
    return _mostly(st.sampled_from([None, VALID[name]]))


class TestBodies:
    def test_none_fields_are_not_sent(self) -> None:
        """Only what was given is in the body; no model means Smart Select."""
        assert text_to_video_body("a cat") == {"prompt": "a cat"}
        assert image_to_video_body("https://x.example/a.png") == {
            "image_url": "https://x.example/a.png"
        }

    @pytest.mark.parametrize("ratio", ["2.39:1", "auto", "adaptive", "0.5:1", "21:9"])
    def test_catalog_ratios_pass_untouched(self, ratio: str) -> None:
        """Decimal ratios and the catalog's words reach Kolbo as given (Kolbo's client does so)."""
        assert text_to_video_body("a cat", aspect_ratio=ratio)["aspect_ratio"] == ratio

    def test_every_field(self) -> None:
        """Every documented field lands under its API name."""
        body = text_to_video_body(
            "a cat", model="m", aspect_ratio="9:16", duration=10, enhance_prompt=False,
            visual_dna_ids=["a", "b"], reference_images=["https://x.example/r.png"],
            resolution="1080p", sound_enabled=True, extra_body={"preset_id": "p"},
        )
        assert body == {
            "prompt": "a cat", "model": "m", "aspect_ratio": "9:16", "duration": 10,
            "enhance_prompt": False, "visual_dna_ids": ["a", "b"],
            "reference_images": ["https://x.example/r.png"], "resolution": "1080p",
            "sound_enabled": True, "preset_id": "p",
        }

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"prompt": ""}, "prompt"),
            ({"prompt": " \n\t"}, "prompt"),
            ({"prompt": 42}, "prompt"),
            ({"prompt": "a", "duration": 0}, "duration"),
            ({"prompt": "a", "duration": -5}, "duration"),
            ({"prompt": "a", "duration": math.nan}, "duration"),
            ({"prompt": "a", "duration": math.inf}, "duration"),
            ({"prompt": "a", "duration": True}, "duration"),
            ({"prompt": "a", "duration": "5"}, "duration"),
            ({"prompt": "a", "aspect_ratio": "16x9"}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": "0:9"}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": 1.77}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": "2.39:0"}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": "1.:2"}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": "AUTO"}, "aspect_ratio"),
            ({"prompt": "a", "aspect_ratio": "16:9:1"}, "aspect_ratio"),
            ({"prompt": "a", "visual_dna_ids": ["1", "2", "3", "4"]}, "visual_dna_ids"),
            ({"prompt": "a", "visual_dna_ids": "abc"}, "visual_dna_ids"),
            ({"prompt": "a", "visual_dna_ids": [""]}, "visual_dna_ids[0]"),
            ({"prompt": "a", "reference_images": ["ftp://x/y"]}, "reference_images[0]"),
            ({"prompt": "a", "enhance_prompt": "yes"}, "enhance_prompt"),
            ({"prompt": "a", "model": ""}, "model"),
            ({"prompt": "a", "extra_body": {"x": math.nan}}, "extra_body"),
            ({"prompt": "a", "extra_body": {"x": object()}}, "extra_body"),
            ({"prompt": "a", "extra_body": {"prompt": "b"}}, "extra_body"),
            ({"prompt": "a", "extra_body": ["x"]}, "extra_body"),
        ],
    )
    def test_rejections_name_the_field(self, kwargs: dict[str, Any], field: str) -> None:
        """Each bad value is an InvalidRequestError (a ValueError) naming the field."""
        kwargs = dict(kwargs)  # the parameter is shared by reruns of the test
        prompt = kwargs.pop("prompt")
        with pytest.raises(k.InvalidRequestError) as info:
            text_to_video_body(prompt, **kwargs)
        assert info.value.field == field
        assert isinstance(info.value, ValueError)

    def test_more_dna_ids_with_a_named_model(self) -> None:
        """A named model may allow more than 3 Visual DNA ids: the server decides."""
        body = text_to_video_body("a", model="minimax-h3", visual_dna_ids=["1", "2", "3", "4"])
        assert len(body["visual_dna_ids"]) == 4

    @pytest.mark.parametrize(
        "url", ["", "   ", "photo.jpg", "file:///etc/passwd", "javascript:alert(1)", "https://", 5]
    )
    def test_image_url(self, url: Any) -> None:
        """image_url must be an http(s) URL with a host."""
        with pytest.raises(k.InvalidRequestError) as info:
            image_to_video_body(url)
        assert info.value.field == "image_url"

    @pytest.mark.slow
    @given(
        prompt=_mostly(st.sampled_from(["a cat", "Une 🎬 prise de vue, au ralenti"])),
        **{name: _field(name) for name in VALID if name != "prompt"},
    )
    @settings(max_examples=300, derandomize=True, deadline=None)
    def test_fuzzed_input_is_sent_as_given_or_refused_by_name(self, **kwargs: Any) -> None:
        """Whatever comes in: a body holding exactly what was given under its API name, or an
        InvalidRequestError naming a field that was given, and at fault: with that one value
        made valid, the call passes or names another field."""
        try:
            body = text_to_video_body(**kwargs)
        except k.InvalidRequestError as error:
            name = error.field.split("[")[0] if error.field else None
            assert name in kwargs, error.field
            assert name == "prompt" or kwargs[name] is not None, error.field
            fixed = {**kwargs, name: VALID[name]}
            try:
                text_to_video_body(**fixed)
            except k.InvalidRequestError as again:
                assert again.field != error.field
            return
        for name, acceptable in ACCEPTABLE.items():
            assert kwargs[name] is None or acceptable(kwargs[name]), (name, kwargs[name])
        extra = kwargs.pop("extra_body")
        expected = {name: value for name, value in kwargs.items() if value is not None}
        assert {name: body[name] for name in expected} == expected
        assert set(body) == set(expected) | set(extra or {})
        assert {name: body[name] for name in extra or {}} == dict(extra or {})

    def test_valid_values_pass(self) -> None:
        """The fuzz's known-good values are accepted together (else its repair proves
        nothing)."""
        assert text_to_video_body(**VALID) == {
            **{n: v for n, v in VALID.items() if n != "extra_body"}, **VALID["extra_body"]
        }

    @pytest.mark.parametrize("bad", ["", " ", "a\x00b", "x" * 300, 12, None])
    def test_generation_ids(self, bad: Any) -> None:
        """attach() ids are non-blank strings without control characters."""
        with pytest.raises(k.InvalidRequestError):
            validate_generation_id(bad)


class TestModels:
    def test_status_tolerates_nulls_and_unknown_fields(self) -> None:
        """Null fields take defaults, unknown keys are ignored, raw keeps everything."""
        data = {"generation_id": "g", "state": "processing", "progress": None, "result": None,
                "error": None, "failure": None, "credits_used": None, "brand_new": [1]}
        status = structure(data, k.GenerationStatus)
        assert (status.progress, status.result, status.failure) == (0, None, None)
        assert status.raw["brand_new"] == [1]

    def test_unknown_state_is_kept_and_not_terminal(self) -> None:
        """A state Kolbo adds later is kept as is and treated as running."""
        status = structure({"generation_id": "g", "state": "upscaling"}, k.GenerationStatus)
        assert status.state == "upscaling"
        assert not status.done
        assert not status.failed

    @pytest.mark.parametrize(
        ("state", "urls", "done", "succeeded", "failed"),
        [
            ("completed", ["u"], True, True, False),
            ("completed", [], True, False, True),
            ("failed", None, True, False, True),
            ("cancelled", None, True, False, True),
            ("pending", None, False, False, False),
        ],
    )
    def test_flags(
        self, state: str, urls: list[str] | None, done: bool, succeeded: bool, failed: bool
    ) -> None:
        """done/succeeded/failed follow the state and the URLs."""
        data: dict[str, Any] = {"generation_id": "g", "state": state}
        if urls is not None:
            data["result"] = {"urls": urls}
        status = structure(data, k.GenerationStatus)
        assert (status.done, status.succeeded, status.failed) == (done, succeeded, failed)

    @pytest.mark.parametrize(
        ("raw", "expected"), [(50.7, 50), ("42", 42), (150, 100), (-3, 0)]
    )
    def test_progress_is_lenient(self, raw: object, expected: int) -> None:
        """Progress is an int 0-100 whatever numeric form it arrives in."""
        status = structure({"generation_id": "g", "state": "x", "progress": raw}, k.GenerationStatus)
        assert status.progress == expected

    @pytest.mark.parametrize(
        ("data", "dropped"),
        [
            ({"generation_id": "g", "state": "completed", "result": {"urls": "https://x"}},
             "result.urls"),
            ({"generation_id": "g", "state": "x", "progress": "lots"}, "progress"),
            ({"generation_id": "g", "state": "x", "result": ["not", "an", "object"]}, "result"),
            ({"generation_id": "g", "state": "completed", "credits_used": "12 credits"},
             "credits_used"),
            ({"generation_id": "g", "state": "failed", "error": {"message": "boom"}}, "error"),
            ({"generation_id": "g", "state": "completed",
              "result": {"urls": ["https://cdn/a.mp4"], "duration": "5s"}}, "result.duration"),
        ],
    )
    def test_odd_optional_fields_are_dropped_not_the_status(
        self, data: dict[str, Any], dropped: str
    ) -> None:
        """An optional field of an unexpected type is left at its default (and stays in
        `raw`); the status itself is still read, so a finished video stays reachable."""
        status = structure(data, k.GenerationStatus)
        assert status.state == data["state"]
        assert status.raw == data
        holder: Any = status
        *parents, name = dropped.split(".")
        for parent in parents:
            holder = getattr(holder, parent)
        default = {"progress": 0, "urls": ()}.get(name)
        assert getattr(holder, name) == default
        if dropped == "result.duration":
            assert status.result is not None
            assert status.result.urls == ("https://cdn/a.mp4",)

    @pytest.mark.parametrize(
        "data",
        [
            {"generation_id": ["g"], "state": "x"},
            {"generation_id": "g", "state": ["completed"]},
        ],
    )
    def test_unreadable_required_fields_are_value_errors(self, data: dict[str, Any]) -> None:
        """A required field that cannot be read is a ValueError (the pipeline makes it an
        APIResponseValidationError), never a TypeError from deep inside."""
        with pytest.raises(ValueError):  # noqa: PT011
            structure(data, k.GenerationStatus)

    def test_failure_is_typed(self) -> None:
        """The failure object becomes a Failure."""
        status = structure(
            {"generation_id": "g", "state": "failed",
             "failure": {"category": "auth", "code": "C", "retryable": True, "provider": "p",
                         "extra": 1}},
            k.GenerationStatus,
        )
        assert status.failure == k.Failure(category="auth", code="C", retryable=True, provider="p")

    def test_model_cost_and_camel_case(self) -> None:
        """cost() multiplies credit, duration and the resolution multiplier."""
        model = structure(
            {"identifier": "m", "credit": 18, "resolutionMultipliers": {"1080p": 1.5},
             "supportedDurations": [5, 10], "type": "text_to_video"},
            k.Model,
        )
        assert model.types == ("text_to_video",)
        assert model.supported_durations == (5.0, 10.0)
        assert model.cost(5) == 90
        assert model.cost(5, resolution="1080p") == 135
        assert model.cost(5, resolution="4k") == 90
        assert model.cost(-1) is None
        assert structure({"identifier": "x"}, k.Model).cost(5) is None

    def test_frozen_and_slotted(self) -> None:
        """Every model class is frozen and slotted."""
        for cls in (k.Submission, k.GenerationStatus, k.Failure, k.VideoResult, k.Model,
                    k.Credits):
            assert "__slots__" in vars(cls)
            assert attrs.has(cls)
        status = structure({"generation_id": "g", "state": "x"}, k.GenerationStatus)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            status.state = "y"  # type: ignore[misc]


def response(status: int, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://api.kolbo.ai/x"), **kwargs)


class TestErrorTable:
    @pytest.mark.parametrize(
        ("status", "code", "cls"),
        [
            (400, "INSUFFICIENT_CREDITS", k.InsufficientCreditsError),
            (402, None, k.InsufficientCreditsError),
            (403, "INSUFFICIENT_CREDITS", k.InsufficientCreditsError),
            (400, "MODEL_NOT_FOUND", k.BadRequestError),
            (400, "MISSING_FIELDS", k.BadRequestError),
            (500, "INVALID_API_KEY", k.AuthenticationError),
            (401, None, k.AuthenticationError),
            (403, None, k.PermissionDeniedError),
            (404, None, k.NotFoundError),
            (409, None, k.ConflictError),
            (422, None, k.BadRequestError),
            (429, None, k.RateLimitError),
            (200, "RATE_LIMITED", k.RateLimitError),
            (500, "GENERATION_ERROR", k.InternalServerError),
            (503, None, k.InternalServerError),
            (418, None, k.APIStatusError),
            (400, "SOMETHING_NEW", k.BadRequestError),
        ],
    )
    def test_code_first_then_status(
        self, status: int, code: str | None, cls: type[k.APIStatusError]
    ) -> None:
        """The body's code decides first, the status second."""
        assert status_error_class(status, code) is cls

    def test_tree(self) -> None:
        """The tree of DESIGN.md, stdlib meanings included."""
        assert issubclass(k.InvalidRequestError, ValueError)
        assert issubclass(k.GenerationTimeoutError, TimeoutError)
        assert issubclass(k.GenerationCancelledError, k.GenerationFailedError)
        assert issubclass(k.SubmissionOutcomeUnknownError, k.APIConnectionError)
        assert issubclass(k.APITimeoutError, k.APIConnectionError)
        assert not issubclass(k.InsufficientCreditsError, k.BadRequestError)
        for name in k.__all__:
            obj = getattr(k, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                assert issubclass(obj, k.KolboError), name

    def test_messages(self) -> None:
        """Messages come from `error`, else `message` (the 429 envelope), else the raw text."""
        err = make_status_error(response(400), {"error": "Model not found",
                                                "code": "MODEL_NOT_FOUND"}, retry_after=None)
        assert "Model not found" in str(err)
        assert "MODEL_NOT_FOUND" in str(err)
        limited = make_status_error(
            response(429), {"status": False, "message": "Too many requests"}, retry_after=12.0
        )
        assert isinstance(limited, k.RateLimitError)
        assert limited.retry_after == 12.0
        assert "Too many requests" in str(limited)
        html = make_status_error(response(502), "<html><body>Bad gateway</body></html>",
                                 retry_after=None)
        assert html.body == "<html><body>Bad gateway</body></html>"
        assert "Bad gateway" in str(html)
        assert html.code is None
