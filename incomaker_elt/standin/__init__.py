"""The stand-in Incomaker Reporting v1 API: one synthetic account, served in-process or over HTTP.

    from incomaker_elt.standin import StandIn
    standin = StandIn(seed=1, scale="small")
    client = httpx.Client(transport=standin.transport(), base_url="http://standin",
                          headers={"Authorization": "Bearer standin-token"})
    with standin.serve() as base_url: ...

The meaning of every figure is in docs/world.md.
"""

from incomaker_elt.standin.calendar import DEFAULT_TODAY
from incomaker_elt.standin.faults import Faults
from incomaker_elt.standin.requestlog import RequestRecord, clear_log, request_log
from incomaker_elt.standin.scales import SCALES
from incomaker_elt.standin.service import StandIn
from incomaker_elt.standin.world import World, build_world

__all__ = [
    "DEFAULT_TODAY",
    "SCALES",
    "Faults",
    "RequestRecord",
    "StandIn",
    "World",
    "build_world",
    "clear_log",
    "request_log",
]
