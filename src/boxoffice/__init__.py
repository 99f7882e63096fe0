"""Boxoffice: a ticket-booking HTTP API that never sells a seat twice."""

__version__ = "0.1.0"
