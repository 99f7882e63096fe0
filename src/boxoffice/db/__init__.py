"""Persistence: the tables, the engine set-up per database, and the migrations."""
