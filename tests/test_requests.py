"""One declaration per route: the request class is the calls' signature, checks and body."""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs
import pytest
import respx

import kolbo_async as k
import kolbo_async._requests as requests_module
from kolbo_async import AsyncKolbo, ImageToVideo, Kolbo, TextToVideo
from kolbo_async._requests import VideoRoute, checked, route_order
from kolbo_async._signatures import arguments_of

KEY = "kolbo_live_" + "a1" * 20
API = "https://api.kolbo.ai/api/v1/generate"
ROUTES = [("generate", TextToVideo), ("from_image", ImageToVideo)]

#: Values to try on a field whose check is unknown to the test: one of them must pass it.
SAMPLES: list[Any] = [
    "16:9", 5, True, ["https://x.example/r.png"], "https://x.example/a.png", {"seed": 1}
]


def _field_types(cls: type) -> dict[str, Any]:
    """The route's fields with their types resolved (where the class was declared)."""
    return typing.get_type_hints(cls, vars(requests_module))


def _every_field(cls: type) -> dict[str, Any]:
    """A value for each field of `cls` (its positional ones lead) that its check accepts."""
    values: dict[str, Any] = {}
    positional = {field.name for field in attrs.fields(cls) if not field.kw_only}
    for field in attrs.fields(cls):
        required = {name: value for name, value in values.items() if name in positional}
        for sample in SAMPLES:
            try:
                cls(**required, **{field.name: sample}).body()
            except k.InvalidRequestError:
                continue
            values[field.name] = sample
            break
        else:
            pytest.fail(f"{cls.__name__}.{field.name} accepts none of the samples")
    return values


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


class TestSignatures:
    @pytest.mark.parametrize(("call", "cls"), ROUTES)
    def test_both_clients_take_the_request_class_fields(self, call: str, cls: type) -> None:
        """Each call's parameters are its request class's: names, kinds, defaults and types,
        on AsyncKolbo and Kolbo alike; only the return differs."""
        fields = inspect.signature(cls).parameters
        types = _field_types(cls)
        with Kolbo(KEY) as blocking:
            for client, returns in ((AsyncKolbo(KEY), "AsyncGeneration"), (blocking, "Generation")):
                signature = inspect.signature(getattr(client.videos, call))
                assert signature.parameters == fields
                assert signature.return_annotation == returns
                for name, param in signature.parameters.items():
                    resolved = eval(param.annotation, vars(requests_module))
                    assert resolved == types[name], name

    def test_the_async_calls_stay_coroutine_functions(self) -> None:
        """Declaring the parameters wraps nothing: the async calls are still `async def`."""
        client = AsyncKolbo(KEY)
        for call, _ in ROUTES:
            assert inspect.iscoroutinefunction(getattr(client.videos, call))

    @pytest.mark.anyio
    async def test_unknown_or_missing_arguments_are_type_errors(
        self, router: respx.MockRouter
    ) -> None:
        """A keyword the route does not declare, or no prompt, is refused before any request."""
        async with AsyncKolbo(KEY) as client:
            with pytest.raises(TypeError, match="bogus"):
                await client.videos.generate("a", bogus=1)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="prompt"):
                await client.videos.generate()  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="positional"):
                await client.videos.from_image("https://x.example/a.png", "a")  # type: ignore[call-arg, arg-type]
        assert not router.calls


class TestBodies:
    @pytest.mark.parametrize(("call", "cls"), ROUTES)
    def test_every_declared_field_is_checked_and_sent(self, call: str, cls: type) -> None:
        """No field is declared and then silently dropped: each one, set, is in the body
        under its own name (extra_body merged in), in declaration order."""
        values = _every_field(cls)
        assert list(values)[-1] == "extra_body"
        path, body = cls(**values).body()
        extra = values.pop("extra_body")
        assert list(body) == list(values) + list(extra)
        assert path.startswith("/api/v1/generate/")

    @pytest.mark.parametrize(("call", "cls"), ROUTES)
    def test_calls_send_what_the_request_class_sends(
        self, router: respx.MockRouter, call: str, cls: type
    ) -> None:
        """Both clients POST exactly `cls(...).body()` for the same arguments."""
        values = _every_field(cls)
        path, body = cls(**values).body()
        route = router.post(f"https://api.kolbo.ai{path}").respond(
            200, json={"success": True, "generation_id": "g"}
        )
        with Kolbo(KEY, rate_limits=None) as client:
            assert getattr(client.videos, call)(**values).id == "g"
        assert json.loads(route.calls.last.request.content) == body

    def test_a_rule_refuses_right_after_its_own_field(self) -> None:
        """The Smart Select limit is checked with visual_dna_ids, before later fields."""
        request = TextToVideo("a", visual_dna_ids=["1", "2", "3", "4"], resolution="")
        with pytest.raises(k.InvalidRequestError) as info:
            request.body()
        assert info.value.field == "visual_dna_ids"


def _seed(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise k.InvalidRequestError(field, f"must be a non-negative integer, not {value!r}")
    return value


@attrs.frozen(kw_only=True, repr=False, field_transformer=route_order)
class _SeededVideo(VideoRoute):
    """A family with one more option, as issue 14's routes will declare theirs."""

    seed: int | None = attrs.field(default=None, metadata=checked(_seed))


@attrs.frozen(repr=False, field_transformer=route_order)
class ClipToVideo(_SeededVideo):
    """A made-up route: a path and its own positional field."""

    _path: ClassVar[str] = "/api/v1/generate/clip"
    clip_url: str = attrs.field(metadata=checked(lambda field, value: value))


class _Calls:
    @arguments_of(lambda: ClipToVideo)
    def from_clip(self, *args: Any, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        return ClipToVideo(*args, **kwargs).body()


class TestOneDeclaration:
    def test_a_new_field_is_in_the_signature_the_checks_and_the_body(self) -> None:
        """One line on a route family reaches the call's signature, its validation (naming
        the field) and the JSON body; the route's own field leads, extra_body stays last."""
        parameters = inspect.signature(_Calls().from_clip).parameters
        names = list(parameters)
        assert (names[0], names[-1]) == ("clip_url", "extra_body")
        assert parameters["seed"].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["seed"].annotation == "int | None"
        assert _Calls().from_clip("c", seed=7, duration=5) == (
            "/api/v1/generate/clip", {"clip_url": "c", "duration": 5, "seed": 7}
        )
        assert repr(ClipToVideo("c", seed=7)) == "ClipToVideo(clip_url='c', seed=7)"
        with pytest.raises(k.InvalidRequestError) as info:
            _Calls().from_clip("c", seed=-1)
        assert info.value.field == "seed"
        with pytest.raises(k.InvalidRequestError) as info:
            _Calls().from_clip("c", duration=0, seed=-1)
        assert info.value.field == "duration"  # the family's fields are checked first
