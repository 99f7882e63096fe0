"""The HTTP edge: parse, call one use case, render. No business rules live here."""
