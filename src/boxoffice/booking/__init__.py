"""The hot path: how a booking request becomes seats taken and a booking stored.

`reserve.py` holds the statements; `direct.py` runs one transaction per request.
"""

from boxoffice.booking.direct import DirectBooker

__all__ = ["DirectBooker"]
