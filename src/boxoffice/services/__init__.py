"""Use cases. Each opens one unit of work, and commits it in the same place."""
