"""The inventory check's comparisons (`find_violations`), for what the schema's own
constraints keep out of a real database: counts that do not add up, negative counts,
and a trail for a section that is not stored."""

from __future__ import annotations

from boxoffice.domain.audit import Counts
from boxoffice.services.inventory_check import SectionRow, Snapshot, find_violations


def consistent() -> Snapshot:
    return Snapshot(
        sections=[SectionRow("s1", capacity=10, remaining=6, held=1, sold=3)],
        held_by_section={"s1": 1},
        sold_by_section={"s1": 3},
        audit={"s1": Counts(6, 1, 3)},
        hold_items_by_status={"h1": ("active", 1, 0), "h2": ("expired", 2, 0)},
    )


def rules(snapshot: Snapshot) -> list[str]:
    return [v.rule for v in find_violations(snapshot)]


def test_a_consistent_snapshot_has_no_violation() -> None:
    assert find_violations(consistent()) == []


def test_seats_that_do_not_add_up_to_capacity() -> None:
    snapshot = consistent()
    snapshot.sections = [SectionRow("s1", capacity=11, remaining=6, held=1, sold=3)]
    assert rules(snapshot) == ["seats_add_up"]


def test_a_negative_count() -> None:
    snapshot = consistent()
    snapshot.sections = [SectionRow("s1", capacity=10, remaining=-1, held=1, sold=10)]
    snapshot.sold_by_section = {"s1": 10}
    snapshot.audit = {"s1": Counts(-1, 1, 10)}
    assert rules(snapshot) == ["negative"]


def test_a_trail_without_its_section() -> None:
    snapshot = consistent()
    snapshot.audit["s2"] = Counts(5, 0, 0)
    (violation,) = find_violations(snapshot)
    assert str(violation) == "audit_trail: s2: a trail 5/0/0 but no row"


def test_settled_holds_keep_no_seats_but_expired_ones_may_until_swept() -> None:
    snapshot = consistent()
    snapshot.hold_items_by_status["h3"] = ("released", 1, 0)
    snapshot.hold_items_by_status["h4"] = ("active", 1, 1)
    assert rules(snapshot) == ["hold_items", "hold_items"]
