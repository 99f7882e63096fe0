"""The domain: plain Python rules about events, sections, seats and bookings."""
