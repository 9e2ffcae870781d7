"""The public surface: names pinned to DESIGN.md, documented, reading as `kolbo_async.X`."""

from __future__ import annotations

import inspect

import kolbo_async

# DESIGN.md's fixed names that exist today (TextToVideo, ImageToVideo, BatchOutcome and
# as_completed arrive with batch fan-out).
DESIGN_NAMES = {
    "AsyncKolbo", "Kolbo", "AsyncGeneration", "Generation", "RateLimits", "Submission",
    "GenerationStatus", "Failure", "VideoResult", "Model", "Credits", "KolboError",
    "InvalidRequestError", "APIConnectionError", "APITimeoutError",
    "SubmissionOutcomeUnknownError", "APIResponseValidationError", "APIStatusError",
    "BadRequestError", "AuthenticationError", "InsufficientCreditsError",
    "PermissionDeniedError", "NotFoundError", "ConflictError", "RateLimitError",
    "InternalServerError", "GenerationFailedError", "GenerationCancelledError",
    "GenerationTimeoutError", "BatchOutcome", "TextToVideo", "ImageToVideo", "as_completed",
}
# Beyond DESIGN.md (issue 16): the hooks' events and the raw responses' result.
HOOK_NAMES = {
    "Event", "RequestDone", "Retrying", "PacingWait", "CooldownStarted",
    "GenerationSubmitted", "StateChanged", "DownloadProgress",
}
RAW_NAMES = {"RawResponse"}
# DESIGN.md "Every generation route, one handle" (issue 14), as its routes arrive.
ROUTE_NAMES = {
    "ImageResult", "TextToImage", "ImageEdit", "FramesToVideo", "VideoToVideo", "Lipsync",
    "ElementsToVideo", "Media",
}


class TestExports:
    def test_all_is_the_design(self) -> None:
        """__all__ holds exactly DESIGN.md's names and the few added since, sorted."""
        assert set(kolbo_async.__all__) == DESIGN_NAMES | HOOK_NAMES | RAW_NAMES | ROUTE_NAMES
        assert kolbo_async.__all__ == sorted(kolbo_async.__all__)

    def test_every_name_is_documented_and_public(self) -> None:
        """Each export has a docstring and reads as kolbo_async.X in tracebacks."""
        for name in kolbo_async.__all__:
            obj = getattr(kolbo_async, name)
            assert inspect.getdoc(obj), name
            assert obj.__module__ == "kolbo_async", name

    def test_public_methods_are_documented(self) -> None:
        """Every public method and property of the client classes has a docstring."""
        for name in ("AsyncKolbo", "AsyncGeneration", "Kolbo", "Generation", "RawResponse"):
            cls = getattr(kolbo_async, name)
            for attr, value in vars(cls).items():
                public = not attr.startswith("_")
                if public and (callable(value) or isinstance(value, property)):
                    assert inspect.getdoc(value), f"{name}.{attr}"

    def test_py_typed(self) -> None:
        """The package ships py.typed for type checkers."""
        from importlib.resources import files

        assert files("kolbo_async").joinpath("py.typed").is_file()
