"""DATABASE_URL as pg_dump and pg_restore take it: a libpq connection string that never
holds the password (command lines are visible to every user), and PGPASSWORD."""

from __future__ import annotations

import pytest

from boxoffice.config import async_database_url
from boxoffice.db.backup import libpq_connection


def test_the_password_goes_to_the_environment_never_to_the_connection_string() -> None:
    url = async_database_url("postgresql://app:s3cr%27et@db.example:5433/boxoffice")
    conninfo, env = libpq_connection(url, connect_timeout=10)
    assert "s3cr" not in conninfo
    assert env == {"PGPASSWORD": "s3cr'et"}
    assert conninfo == (
        "application_name='boxoffice-backup' host='db.example' port='5433' user='app' "
        "dbname='boxoffice' connect_timeout='10'"
    )


def test_no_password_no_environment() -> None:
    conninfo, env = libpq_connection(async_database_url("postgresql:///box"), connect_timeout=3)
    assert env == {}
    assert conninfo == "application_name='boxoffice-backup' dbname='box' connect_timeout='3'"


def test_several_hosts_become_libpq_lists_and_the_session_attributes_carry_over() -> None:
    url = async_database_url(
        "postgresql://app@/box?host=pg-a:5432&host=pg-b:6432&target_session_attrs=read-write"
    )
    conninfo, _ = libpq_connection(url, connect_timeout=10)
    assert "host='pg-a,pg-b' port='5432,6432'" in conninfo
    assert "target_session_attrs='read-write'" in conninfo


@pytest.mark.parametrize(
    ("query", "sslmode"),
    [("ssl=require", "require"), ("sslmode=verify-full", "verify-full"), ("ssl=true", "require")],
)
def test_tls_settings_carry_over(query: str, sslmode: str) -> None:
    url = async_database_url(f"postgresql://app@db/box?{query}")
    assert f"sslmode='{sslmode}'" in libpq_connection(url, connect_timeout=10)[0]


def test_quotes_and_backslashes_in_values_are_escaped() -> None:
    url = async_database_url("postgresql://app@db/we%27ird%5Cname")
    conninfo, _ = libpq_connection(url, connect_timeout=10)
    assert "dbname='we\\'ird\\\\name'" in conninfo
