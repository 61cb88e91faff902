"""PostgreSQL goes through psycopg 3 whichever way its URL is written; other drivers and the
password are left as they are."""

from resources.warehouse import WarehouseResource, driver_url


def test_postgres_urls_use_psycopg_3():
    for url in ("postgresql://u:pw@db:5432/wh", "postgresql+psycopg2://u:pw@db:5432/wh",
                "postgresql+psycopg://u:pw@db:5432/wh"):
        parsed = driver_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.username, parsed.password, parsed.host, parsed.database) == (
            "u", "pw", "db", "wh")


def test_other_drivers_are_kept():
    assert driver_url("postgresql+pg8000://u@db/wh").drivername == "postgresql+pg8000"
    assert driver_url("sqlite:///x.db").drivername == "sqlite"


def test_the_engine_is_psycopg_3():
    engine = WarehouseResource(url="postgresql+psycopg2://u@127.0.0.1:1/none").engine()
    assert engine.dialect.driver == "psycopg"
