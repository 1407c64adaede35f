"""Database failures of the metadata store, said once, the same way to the Python API and to the CLI.

The drivers' errors are recognised by their module (`sqlite3`, `psycopg`, and `sqlalchemy` for what Alembic runs
when migrating) so that nothing heavy is imported to ask. A lost insert race (a driver's IntegrityError) is not a
database failure: the store raises it as `IntegrityError` below, one class whatever the driver, because callers
retry on it when processes race.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from conveyor.exceptions import ConveyorError

__all__ = ["IntegrityError", "MetadataStoreError", "explain", "is_database_error", "is_driver_error",
           "is_integrity_error", "mask_url", "translate", "translated"]

T = TypeVar("T")
#: what SQLite says of a file that is not (or no longer) a database
_DAMAGED = ("file is not a database", "database disk image is malformed", "file is encrypted or is not a database")
#: modules whose exceptions are database errors: the drivers, and SQLAlchemy (migrations)
_DRIVERS = ("sqlite3", "psycopg", "sqlalchemy")


class MetadataStoreError(ConveyorError):
    """The metadata store cannot be used (unreachable, damaged, refused); the message names the fix. Not a
    StackError: callers that retry a lost race on those must not retry a broken database."""


class IntegrityError(Exception):
    """A write broke a unique or foreign key: on a name or version number, usually another process got there first
    (callers retry). The driver's own error is the `__cause__`."""


def mask_url(url: str) -> str:
    """A store URL fit to print: the password hidden."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def is_driver_error(err: BaseException) -> bool:
    """Raised by a database driver or SQLAlchemy, or the store's IntegrityError."""
    return isinstance(err, IntegrityError) or type(err).__module__.split(".", 1)[0] in _DRIVERS


def is_integrity_error(err: BaseException) -> bool:
    """A driver's (or SQLAlchemy's) IntegrityError: PEP 249 names the class the same in every driver."""
    return isinstance(err, (IntegrityError, sqlite3.IntegrityError)) or (
        is_driver_error(err) and any(c.__name__ == "IntegrityError" for c in type(err).__mro__))


def is_database_error(err: BaseException) -> bool:
    """A failure of the database itself (a driver error, or one SQLAlchemy wrapped), other than a lost insert race."""
    if isinstance(err, sqlite3.Error):
        return not isinstance(err, sqlite3.IntegrityError)
    module = type(err).__module__.split(".", 1)[0]
    if module == "psycopg":
        import psycopg

        return isinstance(err, psycopg.Error) and not isinstance(err, psycopg.IntegrityError)
    if module == "sqlalchemy":
        import sqlalchemy.exc as sa_exc

        return isinstance(err, sa_exc.DBAPIError) and not isinstance(err, sa_exc.IntegrityError)
    return False


def explain(err: BaseException, url: str) -> str:
    """One sentence that says what is wrong with the store at `url` and what to do."""
    detail = (str(getattr(err, "orig", None) or err).splitlines() or [type(err).__name__])[0]
    if url.startswith("sqlite") and any(text in detail for text in _DAMAGED):
        path = url.split(":///", 1)[-1] if ":///" in url else url
        return (f"the metadata store {path} is damaged ({detail}): restore it from a backup, or move it aside "
                f"(`mv {path} {path}.damaged`) and Conveyor starts a new, empty store there; or set "
                "CONVEYOR_STORE_URL to use another store")
    if url.startswith("sqlite") and "database is locked" in detail:
        return (f"the metadata store {mask_url(url)} stayed locked by another process for longer than the 60 s "
                "busy timeout: wait for the other Conveyor processes to finish, or use a PostgreSQL store "
                "(CONVEYOR_STORE_URL) for many processes at once")
    return (f"cannot use the metadata store at {mask_url(url)}: {detail}. "
            "Check CONVEYOR_STORE_URL (or unset it to use the project's SQLite store).")


def translate(err: BaseException, url: str) -> BaseException:
    """`err` as the store raises it: a database failure as MetadataStoreError, a driver's IntegrityError as
    IntegrityError, anything else unchanged."""
    if is_database_error(err):
        return MetadataStoreError(explain(err, url))
    if is_integrity_error(err) and not isinstance(err, IntegrityError):
        return IntegrityError(str(getattr(err, "orig", None) or err))
    return err


@contextmanager
def translated(manager: AbstractContextManager[T], url: str) -> Iterator[T]:
    """`manager` (a transaction), with its failures raised as `translate` says."""
    try:
        with manager as value:
            yield value
    except Exception as err:
        mapped = translate(err, url)
        if mapped is err:
            raise
        raise mapped from err
