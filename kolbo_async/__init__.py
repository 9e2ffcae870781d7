"""kolbo-async: an async-first Python SDK for Kolbo's video-generation API.

Example:
    >>> from kolbo_async import AsyncKolbo
    >>> async with AsyncKolbo() as client:                                # doctest: +SKIP
    ...     gen = await client.videos.generate("A drone over snowy peaks")
    ...     path = await gen.download("drone.mp4")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._client import AsyncKolbo as AsyncKolbo
from ._config import RateLimits as RateLimits
from ._exceptions import (
    APIConnectionError as APIConnectionError,
)
from ._exceptions import (
    APIResponseValidationError as APIResponseValidationError,
)
from ._exceptions import (
    APIStatusError as APIStatusError,
)
from ._exceptions import (
    APITimeoutError as APITimeoutError,
)
from ._exceptions import (
    AuthenticationError as AuthenticationError,
)
from ._exceptions import (
    BadRequestError as BadRequestError,
)
from ._exceptions import (
    ConflictError as ConflictError,
)
from ._exceptions import (
    GenerationCancelledError as GenerationCancelledError,
)
from ._exceptions import (
    GenerationFailedError as GenerationFailedError,
)
from ._exceptions import (
    GenerationTimeoutError as GenerationTimeoutError,
)
from ._exceptions import (
    InsufficientCreditsError as InsufficientCreditsError,
)
from ._exceptions import (
    InternalServerError as InternalServerError,
)
from ._exceptions import (
    InvalidRequestError as InvalidRequestError,
)
from ._exceptions import (
    KolboError as KolboError,
)
from ._exceptions import (
    NotFoundError as NotFoundError,
)
from ._exceptions import (
    PermissionDeniedError as PermissionDeniedError,
)
from ._exceptions import (
    RateLimitError as RateLimitError,
)
from ._exceptions import (
    SubmissionOutcomeUnknownError as SubmissionOutcomeUnknownError,
)
from ._handles import AsyncGeneration as AsyncGeneration

if TYPE_CHECKING:  # loaded on first use (`__getattr__`, `_LAZY`)
    from ._batch_types import BatchOutcome as BatchOutcome
    from ._hooks import (
        CooldownStarted as CooldownStarted,
    )
    from ._hooks import (
        DownloadProgress as DownloadProgress,
    )
    from ._hooks import (
        Event as Event,
    )
    from ._hooks import (
        GenerationSubmitted as GenerationSubmitted,
    )
    from ._hooks import (
        PacingWait as PacingWait,
    )
    from ._hooks import (
        RequestDone as RequestDone,
    )
    from ._hooks import (
        Retrying as Retrying,
    )
    from ._hooks import (
        StateChanged as StateChanged,
    )
    from ._models import (
        Credits as Credits,
    )
    from ._models import (
        Failure as Failure,
    )
    from ._models import (
        GenerationStatus as GenerationStatus,
    )
    from ._models import (
        ImageResult as ImageResult,
    )
    from ._models import Media as Media
    from ._models import (
        Model as Model,
    )
    from ._models import (
        Submission as Submission,
    )
    from ._models import (
        VideoResult as VideoResult,
    )
    from ._raw import RawResponse as RawResponse
    from ._requests import ImageToVideo as ImageToVideo
    from ._requests import TextToVideo as TextToVideo
    from ._routes_image import ImageEdit as ImageEdit
    from ._routes_image import TextToImage as TextToImage
    from ._routes_video import ElementsToVideo as ElementsToVideo
    from ._routes_video import FramesToVideo as FramesToVideo
    from ._routes_video import Lipsync as Lipsync
    from ._routes_video import VideoToVideo as VideoToVideo
    from ._sync import Kolbo as Kolbo
    from ._sync_handles import Generation as Generation
    from ._sync_handles import as_completed as as_completed

#: Names loaded on first use, and their modules: most of `import kolbo_async`'s own cost is
#: attrs building classes, so a program pays for the ones it uses, when it first uses them
#: (their modules name them ``kolbo_async``'s). Eager: the async client and the errors.
_LAZY = {
    "Credits": "_models", "Failure": "_models", "GenerationStatus": "_models",
    "ImageResult": "_models", "Media": "_models", "Model": "_models",
    "Submission": "_models", "VideoResult": "_models",
    "ImageToVideo": "_requests", "TextToVideo": "_requests",
    "ImageEdit": "_routes_image", "TextToImage": "_routes_image",
    "ElementsToVideo": "_routes_video", "FramesToVideo": "_routes_video",
    "Lipsync": "_routes_video", "VideoToVideo": "_routes_video",
    "Kolbo": "_sync", "Generation": "_sync_handles", "as_completed": "_sync_handles",
    "CooldownStarted": "_hooks", "DownloadProgress": "_hooks", "Event": "_hooks",
    "GenerationSubmitted": "_hooks", "PacingWait": "_hooks", "RequestDone": "_hooks",
    "Retrying": "_hooks", "StateChanged": "_hooks", "RawResponse": "_raw",
    "BatchOutcome": "_batch_types",
}  # fmt: skip

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncGeneration",
    "AsyncKolbo",
    "AuthenticationError",
    "BadRequestError",
    "BatchOutcome",
    "ConflictError",
    "CooldownStarted",
    "Credits",
    "DownloadProgress",
    "ElementsToVideo",
    "Event",
    "Failure",
    "FramesToVideo",
    "Generation",
    "GenerationCancelledError",
    "GenerationFailedError",
    "GenerationStatus",
    "GenerationSubmitted",
    "GenerationTimeoutError",
    "ImageEdit",
    "ImageResult",
    "ImageToVideo",
    "InsufficientCreditsError",
    "InternalServerError",
    "InvalidRequestError",
    "Kolbo",
    "KolboError",
    "Lipsync",
    "Media",
    "Model",
    "NotFoundError",
    "PacingWait",
    "PermissionDeniedError",
    "RateLimitError",
    "RateLimits",
    "RawResponse",
    "RequestDone",
    "Retrying",
    "StateChanged",
    "Submission",
    "SubmissionOutcomeUnknownError",
    "TextToImage",
    "TextToVideo",
    "VideoResult",
    "VideoToVideo",
    "as_completed",
]

# Tracebacks and reprs read `kolbo_async.RateLimitError`, not `kolbo_async._exceptions...`.
for _name in __all__:
    if _name in _LAZY:
        continue  # their modules name them kolbo_async's themselves
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("kolbo_async."):
        _obj.__module__ = "kolbo_async"
del _name, _obj


def __getattr__(name: str) -> Any:
    # Read lazily: importlib.metadata costs milliseconds that `import kolbo_async` should not.
    if name == "__version__":
        from importlib.metadata import version

        return version("kolbo-async")
    if name in _LAZY:
        from importlib import import_module

        value = globals()[name] = getattr(import_module(f"kolbo_async.{_LAZY[name]}"), name)
        return value
    raise AttributeError(f"module 'kolbo_async' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Completion, `help()` and `inspect.getmembers` list the names loaded on first use too.
    return sorted({*globals(), *__all__})
