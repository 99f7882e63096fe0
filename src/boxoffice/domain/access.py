"""Who may do what: the roles, and the rule that keeps everyone to their own objects.

    admin        everything, key management included
    organizer    creates events; sees and manages its own events' bookings, holds and
                 audit trail; may book or hold for a named customer in its own events
    customer     books and holds for itself only (its customer id comes from its key,
                 never from a body); sees its own bookings and holds
    the public   reads events and availability, and the health endpoints (no principal)

Someone else's object is answered as if it did not exist: the rules here say
"not yours", and the caller raises the matching `NotFound`, so a 404 tells a
prober nothing an unknown id would not.

`PERMISSIONS` is the one table of who may call which operation: the routes ask it
(`api/access.caller`), the key check takes its public operations from it, and the
docs' table (docs/security.md) is checked against it by a test.

With `BOXOFFICE_OPEN_ACCESS=true` (local demos only) every request acts as
`OPEN_ACCESS`: the original open API, with the customer id taken from the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from boxoffice.domain.errors import Forbidden

Role = Literal["admin", "organizer", "customer"]
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its API key describes it."""

    key_id: str | None  # None: open access, no key
    role: Role
    customer_id: str | None = None  # a customer key's customer
    organizer_id: str | None = None  # an organizer key's organizer

    @property
    def is_staff(self) -> bool:
        """Organizers and admins act for many people (a box office), customers for one."""
        return self.role != "customer"

    def may_manage_event(self, organizer_id: str | None) -> bool:
        """Bookings, holds and the audit trail of an event owned by `organizer_id`."""
        if self.role == "admin":
            return True
        return (
            self.role == "organizer"
            and organizer_id is not None
            and (organizer_id == self.organizer_id)
        )

    def may_sell_in(self, organizer_id: str | None) -> bool:
        """Book or hold in an event owned by `organizer_id`: customers anywhere, for
        themselves; organizers in their own events only, for a named customer."""
        return self.role == "customer" or self.may_manage_event(organizer_id)

    def may_see(self, *, customer_id: str | None, organizer_id: str | None) -> bool:
        """A booking or hold of `customer_id` in an event owned by `organizer_id`."""
        if self.role == "customer":
            return customer_id is not None and customer_id == self.customer_id
        return self.may_manage_event(organizer_id)

    def customer_for(self, requested: str | None) -> str | None:
        """The customer a booking or hold is for: a customer key's own, whatever the body
        says (a different one is refused, not silently replaced); otherwise the body's."""
        if self.role != "customer":
            return requested
        if requested is not None and requested != self.customer_id:
            raise Forbidden("A customer key books for its own customer only: leave customerId out.")
        return self.customer_id

    def require(self, operation: str) -> None:
        """Function-level authorization: raise `Forbidden` unless `PERMISSIONS` lets this
        role call `operation`."""
        if self.role not in _ALLOWED[operation]:  # one lookup: this is on every request
            roles = PERMISSIONS[operation].roles
            raise Forbidden(f"This needs a key with the role {' or '.join(roles)}.")

    def idempotency_scope(self, customer: str | None = None) -> str | None:
        """Whose idempotency keys these are: the key's customer, else the key itself; with
        open access, the request's `customer` (or everyone's: None), as before keys."""
        if self.key_id is None:
            return customer
        if self.customer_id is not None:
            return self.customer_id
        return f"key:{self.key_id}"


OPEN_ACCESS = Principal(key_id=None, role="admin")


@dataclass(frozen=True, slots=True)
class Permission:
    """Who may call one operation: the public (no roles: no key needed), or keys of
    `roles` (admins may call every operation). `objects` says, for the docs, which of
    its objects a caller reaches; `Principal`'s `may_*` rules enforce that."""

    roles: tuple[Role, ...]
    objects: str

    @property
    def public(self) -> bool:
        return not self.roles

    def allows(self, role: Role) -> bool:
        return self.public or role == "admin" or role in self.roles


_PUBLIC: tuple[Role, ...] = ()
_ANY_KEY = ROLES
_SELLING = "a customer for itself; an organizer in its own events, for a named customer"
_THEIRS = "a customer its own; an organizer its own events'; an admin all"
_OWN_EVENTS = "its own events' (an admin: every event's)"

# Every operation of the API, by its OpenAPI operation id.
PERMISSIONS: dict[str, Permission] = {
    "list_events": Permission(_PUBLIC, "every event"),
    "get_event": Permission(_PUBLIC, "every event, with its availability"),
    "create_event": Permission(("organizer",), "its own (an admin names the organizer)"),
    "create_event_legacy": Permission(("organizer",), "its own (an admin names the organizer)"),
    "event_audit": Permission(("organizer",), _OWN_EVENTS),
    "event_flags": Permission(("organizer",), _OWN_EVENTS),
    "all_flags": Permission(("admin",), "every flag"),
    "book": Permission(("customer", "organizer"), _SELLING),
    "place_hold": Permission(("customer", "organizer"), _SELLING),
    "list_bookings": Permission(_ANY_KEY, _THEIRS),
    "get_booking": Permission(_ANY_KEY, _THEIRS),
    "cancel_booking": Permission(_ANY_KEY, _THEIRS),
    "get_hold": Permission(_ANY_KEY, _THEIRS),
    "confirm_hold": Permission(_ANY_KEY, _THEIRS),
    "release_hold": Permission(_ANY_KEY, _THEIRS),
    "put_waiting_room": Permission(("organizer",), _OWN_EVENTS),
    "get_waiting_room": Permission(("organizer",), _OWN_EVENTS),
    "join_queue": Permission(("customer",), "a place for itself"),
    "poll_queue": Permission(_PUBLIC, "the place its ticket names (the ticket is signed)"),
    "create_key": Permission(("admin",), "every key"),
    "list_keys": Permission(("admin",), "every key, never a secret"),
    "revoke_key": Permission(("admin",), "every key"),
    "metrics": Permission(("admin",), "the whole service"),
    "healthz": Permission(_PUBLIC, "the process"),
    "readyz": Permission(_PUBLIC, "the process and its database"),
}
PUBLIC_OPERATIONS = frozenset(name for name, rule in PERMISSIONS.items() if rule.public)
_ALLOWED = {
    name: frozenset(role for role in ROLES if rule.allows(role))
    for name, rule in PERMISSIONS.items()
}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listed: everything but its secret."""

    id: str
    role: Role
    name: str | None
    customer_id: str | None
    organizer_id: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def principal(self) -> Principal:
        return Principal(self.id, self.role, self.customer_id, self.organizer_id)

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)
