"""The simulator's plain records: which route a request is for, how it is kept, JSON numbers."""

from __future__ import annotations

import pytest

from kolbo_async.testing import SimRequest, SimResponse
from kolbo_async.testing._records import ROUTES, json_answer, number, recorded, route_of


class TestRouteOf:
    @pytest.mark.parametrize(
        ("method", "path", "host", "route"),
        [
            ("POST", "/api/v1/generate/video", "api", "generate"),
            ("POST", "/api/v1/generate/video/from-image", "api", "generate"),
            ("GET", "/api/v1/generate/abc/status", "api", "status"),
            ("POST", "/api/v1/generate/abc/cancel", "api", "cancel"),
            ("GET", "/api/v1/generate/abc/cancel", "api", "other"),
            ("GET", "/api/v1/models", "api", "models"),
            ("GET", "/api/v1/account/credits", "api", "credits"),
            ("GET", "/api/v1/generate/video", "api", "other"),
            ("GET", "/api/v1/models", "cdn", "cdn"),
        ],
    )
    def test_routes(self, method: str, path: str, host: str, route: str) -> None:
        """Method, path and host decide the route; anything else is "other"."""
        assert route_of(SimRequest(method, path, host=host)) == route
        assert route in ROUTES | {"other"}


class TestRecorded:
    def test_keeps_json_and_the_status(self) -> None:
        """A JSON body is kept parsed, with the status answered."""
        kept = recorded(SimRequest("POST", "/x", body=b'{"a": 1}'), 5.0, SimResponse(201))
        assert (kept.time, kept.json, kept.status, kept.fault) == (5.0, {"a": 1}, 201, None)

    def test_a_refused_request_has_no_status(self) -> None:
        """drop_before never reached the service: status 0; a non-JSON body is kept as text."""
        kept = recorded(SimRequest("POST", "/x", body=b"{nope"), 0.0,
                        SimResponse(fault="drop_before"))
        assert (kept.status, kept.json, kept.fault) == (0, "{nope", "drop_before")


class TestJson:
    def test_numbers_as_kolbo_writes_them(self) -> None:
        """Whole numbers lose their decimal point; others keep four places."""
        assert (number(35.0), number(0.123456), number(7)) == (35, 0.1235, 7)

    def test_json_answer(self) -> None:
        """A JSON answer carries its content type."""
        answer = json_answer(200, {"ok": True})
        assert (answer.headers["content-type"], answer.body) == ("application/json",
                                                                 b'{"ok": true}')
