"""The fraud rules (`domain/fraud.py`): each raises its flag at its threshold, within its
window, once per window per subject, and not at all when set to 0."""

from __future__ import annotations

from datetime import UTC, datetime

from boxoffice.domain.fraud import Caller, FraudRules, Watch

AT = datetime(2026, 12, 1, tzinfo=UTC)
ALICE = Caller(key_id="k" * 16, customer_id="alice", address="203.0.113.7")


def test_buying_the_maximum_again_and_again_is_flagged_once_per_window() -> None:
    watch = Watch(FraudRules(window_seconds=60, max_quantity_repeats=3))
    flags = [watch.purchase(t, AT, ALICE, "e1", 10, 10) for t in (0, 1, 2, 3, 4)]
    assert [len(found) for found in flags] == [0, 0, 1, 0, 0]
    flag = flags[2][0]
    assert (flag.rule, flag.customer_id, flag.event_id, flag.key_id) == (
        "max_quantity_repeat",
        "alice",
        "e1",
        "k" * 16,
    )
    assert flag.evidence["count"] == 3
    assert watch.purchase(5, AT, ALICE, "e1", 9, 10) == []  # under the maximum: not counted
    assert len(watch.purchase(70, AT, ALICE, "e1", 10, 10)) == 0  # a new window: 1 of 3
    assert len(watch.purchase(71, AT, ALICE, "e1", 10, 10)) == 0
    assert len(watch.purchase(72, AT, ALICE, "e1", 10, 10)) == 1


def test_occurrences_outside_the_window_do_not_count() -> None:
    watch = Watch(FraudRules(window_seconds=10, max_quantity_repeats=3))
    assert [watch.purchase(t, AT, ALICE, "e1", 4, 4) for t in (0, 11, 22, 33)] == [[]] * 4


def test_many_refusals_are_flagged_per_key_or_address() -> None:
    watch = Watch(FraudRules(refusals=5))
    anonymous = Caller(None, None, "198.51.100.9")
    raised = [watch.refusal(t, AT, anonymous, "unauthorized", None) for t in range(10)]
    assert [len(found) for found in raised] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert raised[4][0].address == "198.51.100.9"
    assert raised[4][0].evidence["lastCode"] == "unauthorized"
    # Another caller counts on its own.
    assert watch.refusal(0, AT, ALICE, "not_found", "e1") == []


def test_hold_churn_is_flagged_from_the_customers_hold_record() -> None:
    watch = Watch(FraudRules(hold_churn=4))
    assert watch.hold_churn(0, AT, ALICE, "e1", 3) == []
    found = watch.hold_churn(1, AT, ALICE, "e1", 4)
    assert [(f.rule, f.evidence) for f in found] == [("hold_churn", {"givenUpLastHour": 4})]
    assert watch.hold_churn(2, AT, ALICE, "e1", 5) == []  # once per window
    nobody = Caller("k" * 16, None, "203.0.113.7")
    assert watch.hold_churn(3, AT, nobody, "e1", 50) == []  # no customer, no churn record


def test_many_customers_from_one_address_are_flagged() -> None:
    watch = Watch(FraudRules(customers_per_address=3, window_seconds=100))
    found = []
    for t, customer in enumerate(["a", "b", "a", "c", "d"]):
        found += watch.purchase(t, AT, Caller(None, customer, "192.0.2.1"), "e1", 1, 10)
    assert len(found) == 1
    assert found[0].rule == "shared_address"
    assert found[0].evidence["customers"] == ["a", "b", "c"]
    assert found[0].customer_id is None
    assert found[0].event_id is None  # customers of any events: an admin's flag
    # Customers last seen long ago no longer count.
    later = Watch(FraudRules(customers_per_address=3, window_seconds=10))
    for t, customer in [(0, "a"), (1, "b"), (20, "c"), (21, "d")]:
        assert later.purchase(t, AT, Caller(None, customer, "192.0.2.1"), "e1", 1, 10) == []


def test_a_rule_set_to_zero_is_off() -> None:
    watch = Watch(
        FraudRules(max_quantity_repeats=0, refusals=0, hold_churn=0, customers_per_address=0)
    )
    for t in range(100):
        assert watch.purchase(t, AT, Caller(None, f"c{t}", "192.0.2.1"), "e1", 10, 10) == []
        assert watch.refusal(t, AT, ALICE, "not_found", None) == []
        assert watch.hold_churn(t, AT, ALICE, "e1", 1000) == []


def test_memory_stays_bounded_under_a_flood_of_subjects() -> None:
    watch = Watch(FraudRules(refusals=5), max_subjects=1000)
    for n in range(10_000):
        watch.refusal(n, AT, Caller(None, None, f"10.0.{n // 256}.{n % 256}"), "unauthorized", None)
    assert len(watch.times) <= 1001


def test_a_customer_seen_again_counts_from_its_last_purchase() -> None:
    watch = Watch(FraudRules(customers_per_address=3, window_seconds=10))
    shop = "192.0.2.1"
    for t, customer in [(0, "a"), (1, "b"), (9, "a"), (12, "c")]:
        assert watch.purchase(t, AT, Caller(None, customer, shop), "e1", 1, 10) == []
    # b (last seen at 1) has gone quiet; a (seen again at 9) has not.
    found = watch.purchase(13, AT, Caller(None, "d", shop), "e1", 1, 10)
    assert [f.evidence["customers"] for f in found] == [["a", "c", "d"]]


def test_the_customers_of_one_address_stay_bounded() -> None:
    """A shop's backend calls for every one of its customers from one address."""
    watch = Watch(FraudRules(customers_per_address=10, window_seconds=3600), max_subjects=1000)
    for n in range(10_000):
        watch.purchase(n / 100, AT, Caller(None, f"c{n}", "192.0.2.1"), "e1", 1, 10)
    assert len(watch.customers["192.0.2.1"]) == 1000


def test_a_watch_that_remembers_nobody_still_watches() -> None:
    watch = Watch(FraudRules(customers_per_address=2), max_subjects=0)
    for n in range(3):
        watch.purchase(n, AT, Caller(None, f"c{n}", "192.0.2.1"), "e1", 1, 10)
    assert watch.customers["192.0.2.1"] == {}
