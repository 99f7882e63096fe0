"""Logging (and, later, metrics) set-up."""
