"""What a user agent answers to a request that parsed but cannot be served as it is
(RFC 3261 §8.2.1–§8.2.3 and the RFC 4475 §3.3 cases), and which responses to drop (§8.1.3.3, §18.1.2).

Method checks (405/501) and authentication (401/407, e.g. RFC 4475 regaut01's unknown scheme) are
the user-agent core's and the auth layer's; Max-Forwards 0 only matters when forwarding (483).
"""
from __future__ import annotations

from typing import Iterable

from .message import Request, Response, make_response

REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")  # Max-Forwards is not: RFC 2543 peers omit it
SINGLE_VALUED = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type",
                 "Expires")


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip(" \t").lower()


def _q_zero(value: str) -> bool:
    for p in value.split(";")[1:]:
        name, _, v = p.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(v.strip()) == 0.0
            except ValueError:
                return False
    return False


def _accepts(pattern: str, media: str) -> bool:
    if pattern == "*/*" or pattern == media:
        return True
    return pattern.endswith("/*") and media.startswith(pattern[:-1])


def check_request(req: Request, *, supported_schemes: Iterable[str] = ("sip", "sips"),
                  supported_extensions: Iterable[str] = (),
                  accept_types: Iterable[str] = ("application/sdp",)) -> Response | None:
    """The error response a UAS sends for req, or None when it may be processed.

    In order: 400 for missing or repeated single-value headers (and a body without Content-Type),
    416 for a Request-URI scheme not in supported_schemes, 420 with Unsupported for Require
    option-tags not in supported_extensions (not for CANCEL), 415 with Accept / Accept-Encoding
    for a body we cannot read, 406 for an INVITE whose Accept excludes every type in accept_types.
    An ACK is never answered: None.
    """
    if req.method == "ACK":
        return None
    h = req.headers
    missing = [n for n in REQUIRED if n not in h]
    if missing:
        return make_response(req, 400, "Missing " + ", ".join(missing))
    repeated = [n for n in SINGLE_VALUED if h.count(n) > 1]
    if repeated:
        return make_response(req, 400, "Multiple values in " + ", ".join(repeated))
    if req.uri.scheme.lower() not in {s.lower() for s in supported_schemes}:
        return make_response(req, 416)
    if req.method != "CANCEL":
        known = {e.lower() for e in supported_extensions}
        unknown = [tag for tag in h.getall("Require") if tag.lower() not in known]
        if unknown:
            resp = make_response(req, 420)
            resp.headers.add("Unsupported", ", ".join(unknown))
            return resp
    types = [t.lower() for t in accept_types]
    if req.body:
        ctype = h.get("Content-Type")
        if ctype is None:
            return make_response(req, 400, "Missing Content-Type")
        if _media_type(ctype) not in types:
            resp = make_response(req, 415)
            resp.headers.add("Accept", ", ".join(accept_types))
            return resp
        if any(e.lower() != "identity" for e in h.getall("Content-Encoding")):
            resp = make_response(req, 415)
            resp.headers.add("Accept-Encoding", "identity")
            return resp
    if req.method == "INVITE" and "Accept" in h:
        acceptable = [_media_type(a) for a in h.getall("Accept") if not _q_zero(a)]
        if not any(_accepts(a, t) for a in acceptable for t in types):
            return make_response(req, 406)
    return None


def _local(host: str, port: int | None, local_addresses: Iterable[str]) -> bool:
    names = {a.lower() for a in local_addresses}
    return host in names or (port is not None and f"{host}:{port}" in names)


def check_response(resp: Response, local_addresses: Iterable[str]) -> str | None:
    """Why a UA must silently drop this response (a short text), or None to accept it.

    local_addresses are the sent-by values we put in our Vias: "host" (any port) or "host:port",
    IPv6 in brackets. Dropped: no Via, a top Via that is not ours (§18.1.2 — e.g. RFC 4475 bcast's
    broadcast address), more than one Via (§8.1.3.3), missing or repeated From/To/Call-ID/CSeq.
    """
    vias = resp.vias
    if not vias:
        return "no Via"
    top = vias[0]
    if not _local(top.host, top.port, local_addresses):
        return f"top Via sent-by {top.sent_by} is not ours"
    if len(vias) > 1:
        return "more than one Via"
    h = resp.headers
    missing = [n for n in REQUIRED if n not in h]
    if missing:
        return "missing " + ", ".join(missing)
    repeated = [n for n in SINGLE_VALUED if h.count(n) > 1]
    if repeated:
        return "multiple values in " + ", ".join(repeated)
    return None
