"""Database failures of the metadata store, said once, the same way to the Python API and to the CLI.

SQLAlchemy is imported only once one of its errors is at hand (the CLI's help and the step's remote side never
load it); an IntegrityError is left alone, because callers retry on it when processes race.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from conveyor.exceptions import ConveyorError

__all__ = ["MetadataStoreError", "explain", "is_database_error", "mask_url", "translate", "translated"]

T = TypeVar("T")
#: what SQLite says of a file that is not (or no longer) a database
_DAMAGED = ("file is not a database", "database disk image is malformed", "file is encrypted or is not a database")


class MetadataStoreError(ConveyorError):
    """The metadata store cannot be used (unreachable, damaged, refused); the message names the fix. Not a
    StackError: callers that retry a lost race on those must not retry a broken database."""


def mask_url(url: str) -> str:
    """A store URL fit to print: the password hidden."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def is_database_error(err: BaseException) -> bool:
    """A failure of the database itself (a driver error SQLAlchemy wrapped), other than a lost insert race."""
    if not type(err).__module__.startswith("sqlalchemy"):
        return False
    import sqlalchemy.exc as sa_exc

    return isinstance(err, sa_exc.DBAPIError) and not isinstance(err, sa_exc.IntegrityError)


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
    """`err` as a MetadataStoreError if it is a database failure, else unchanged."""
    return MetadataStoreError(explain(err, url)) if is_database_error(err) else err


@contextmanager
def translated(manager: AbstractContextManager[T], url: str) -> Iterator[T]:
    """`manager` (a transaction), with database failures raised as MetadataStoreError."""
    try:
        with manager as value:
            yield value
    except Exception as err:
        mapped = translate(err, url)
        if mapped is err:
            raise
        raise mapped from err

