"""Misbehaviour on demand: scripted and random faults, and the pages a broken proxy sends."""

from __future__ import annotations

import random
from collections import deque

from ._records import ROUTES, Faults, SimResponse

__all__ = ["FAULTS", "HTML_502", "FaultSource", "gateway_page"]

#: What `inject()` accepts. drop_before: the connection is refused before the request is
#: read (nothing happens); drop_after: the request is processed, then the connection drops.
#: The gateway faults are processed too, and then a gateway in front of Kolbo replaces the
#: answer: with its own 502/504/524 HTML page, or with a 200 whose body is cut short.
FAULTS = frozenset(
    {"500", "502", "503", "html_502", "invalid_json", "429", "drop_before", "drop_after",
     "slow", "insufficient_credits", "gateway_502", "gateway_504", "gateway_524",
     "gateway_garbled_200"}
)

#: A proxy's own error page, as Cloudflare sends it.
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_GATEWAY_PAGES = {
    "gateway_502": (502, "Bad Gateway"),
    "gateway_504": (504, "Gateway Time-out"),
    "gateway_524": (524, "A timeout occurred"),
}


def gateway_page(fault: str) -> SimResponse:
    """What a gateway in front of Kolbo answers instead of Kolbo's answer, for `fault`."""
    if fault == "gateway_garbled_200":
        return SimResponse(200, {"content-type": "application/json"}, b'{"success": true, "gen')
    status, reason = _GATEWAY_PAGES[fault]
    page = (
        f"<html><head><title>{status} {reason}</title></head><body>"
        f"<center><h1>{status} {reason}</h1></center><hr><center>gateway</center>"
        "</body></html>"
    ).encode()
    return SimResponse(status, {"content-type": "text/html"}, page)


class FaultSource:
    """Which fault, if any, the next request to a route meets.

    Scripted faults (`inject`) come first, in order; then the random rates of `faults`, drawn
    from a generator of their own so that generation ids do not shift when rates change.
    """

    def __init__(self, seed: int) -> None:
        self.faults = Faults()
        self.rng = random.Random(f"faults:{seed}")
        self._injected: dict[str, deque[str]] = {route: deque() for route in ROUTES}

    def inject(self, route: str, fault: str, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to `route` (see `Simulator.inject`).

        Raises:
            ValueError: an unknown route or fault.
        """
        if route not in ROUTES:
            raise ValueError(f"route must be one of {sorted(ROUTES)}, not {route!r}")
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {sorted(FAULTS)}, not {fault!r}")
        self._injected[route].extend([fault] * times)

    def next(self, route: str) -> str | None:
        """The fault the next request to `route` meets, or None."""
        queue = self._injected.get(route)
        if queue:
            return queue.popleft()
        faults = self.faults
        if route == "status":
            rates = [
                (faults.status_error_rate, ("500", "502", "503", "html_502")),
                (faults.status_drop_rate, ("drop_before", "drop_after")),
                (faults.status_slow_rate, ("slow",)),
            ]
        elif route == "generate":
            # A refused POST never reaches the server, so it comes before the 429 roll.
            rates = [
                (faults.generate_refuse_rate, ("drop_before",)),
                (faults.generate_429_rate, ("429",)),
            ]
        else:
            return None
        if not any(rate for rate, _ in rates):
            return None  # draw nothing, so the random sequence only moves when faults are on
        roll = self.rng.random()
        for rate, choices in rates:
            if roll < rate:
                return self.rng.choice(choices)
            roll -= rate
        return None

    def drops_after_create(self) -> bool:
        """Whether a generation just created loses its answer (a random fault)."""
        rate = self.faults.generate_drop_after_create_rate
        return bool(rate) and self.rng.random() < rate
