"""The project (where `.conveyor/` lives), its store, and the active stack; created on first use."""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.exceptions import StackError

if TYPE_CHECKING:
    from conveyor.secrets.vault import Vault
    from conveyor.stack.registry import FlavorRegistry
    from conveyor.stack.stack import Stack
    from conveyor.store.store import MetadataStore

PROJECT_DIR_NAME = ".conveyor"
DEFAULT_STACK = "default"


def find_project_root(start: Path | None = None) -> Path:
    """CONVEYOR_PROJECT_DIR, else the nearest ancestor holding `.conveyor/`, else the working directory."""
    env = os.environ.get("CONVEYOR_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / PROJECT_DIR_NAME).is_dir():
            return p
    return here


class Context:
    def __init__(self, root: Path, store_url: str | None = None) -> None:
        self.root = root
        self.dir = root / PROJECT_DIR_NAME
        self.store_url = store_url or os.environ.get("CONVEYOR_STORE_URL") or f"sqlite:///{self.dir / 'conveyor.db'}"
        self._defaults_lock = threading.Lock()
        self._defaults_done = False

    def ensure_dir(self) -> Path:
        """`.conveyor/`, created readable by this user only (0700): it holds the store, logs and job specs."""
        from conveyor.utils.private import private_makedirs

        self.root.mkdir(parents=True, exist_ok=True)  # the project's own directory: the user's to set
        private_makedirs(self.dir)
        return self.dir

    @cached_property
    def vault(self) -> "Vault":
        """Secrets of this project's store; decrypted values are cached for the life of the process."""
        from conveyor.secrets.vault import Vault

        return Vault(self.store)

    @cached_property
    def store(self) -> "MetadataStore":
        from conveyor.store.store import MetadataStore

        if self.store_url.startswith("sqlite:///"):
            self.ensure_dir()
            if self.store_url == f"sqlite:///{self.dir / 'conveyor.db'}":
                from conveyor.utils.private import create_private_file

                create_private_file(self.dir / "conveyor.db")  # SQLite gives its -wal and -shm files this mode
        store = MetadataStore(self.store_url)
        store.ensure_schema()
        return store

    @cached_property
    def registry(self) -> "FlavorRegistry":
        from conveyor.stack.registry import FlavorRegistry

        return FlavorRegistry(self.store)

    def ensure_defaults(self) -> None:
        """Create the `default` stack (local orchestrator, local artifact store, `local` step operator) once."""
        if self._defaults_done:
            return
        with self._defaults_lock:
            if self._defaults_done:
                return
            store = self.store
            if store.get_kv("initialized") is None:
                self._create_default_stack()
            self._defaults_done = True

    def _create_default_stack(self) -> None:
        """Idempotent, and safe when processes race to do it: a conflict means another one got there first, so
        the next try finds its rows and completes what is missing."""
        import time

        from conveyor.store.errors import IntegrityError

        for attempt in range(20):
            try:
                self._create_default_rows()
                return
            except (IntegrityError, StackError):
                if attempt == 19:
                    raise
                time.sleep(0.05)

    def _create_default_rows(self) -> None:
        store = self.store
        ids = []
        for type_, name, flavor, config in (
            ("orchestrator", "default", "local", {}),
            ("artifact_store", "default", "local", {"path": str(self.dir / "artifacts")}),
            ("step_operator", "local", "local", {}),
        ):
            existing = store.get_component(type_, name)
            ids.append(existing["id"] if existing else store.create_component(type_, name, flavor, config))
        if store.get_stack(DEFAULT_STACK) is None:
            store.create_stack(DEFAULT_STACK, ids)
        if store.get_kv("active_stack") is None:
            store.set_kv("active_stack", DEFAULT_STACK)
        store.set_kv("initialized", "1")

    @property
    def active_stack_name(self) -> str:
        self.ensure_defaults()
        return os.environ.get("CONVEYOR_STACK") or self.store.get_kv("active_stack") or DEFAULT_STACK

    def load_stack(self, name: str | None = None) -> "Stack":
        from conveyor.stack.stack import Stack

        self.ensure_defaults()
        name = name or self.active_stack_name
        record = self.store.get_stack(name)
        if record is None:
            known = ", ".join(self.store.list_stacks()) or "(none)"
            raise StackError(f"no stack named {name!r}. Stacks: {known}. Register one with "
                             f"`conveyor stack register {name} -o ORCHESTRATOR -a ARTIFACT_STORE [-s STEP_OPERATOR]`.")
        return Stack(name, record["components"], self.registry, self.vault)


_contexts: dict[tuple[Path, str | None], Context] = {}
_lock = threading.Lock()


def get_context() -> Context:
    """One context per (project root, store URL), so tests that change directories get their own."""
    root = find_project_root()
    key = (root, os.environ.get("CONVEYOR_STORE_URL"))
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = Context(root)
        return ctx


def reset_contexts() -> None:
    with _lock:
        for ctx in _contexts.values():
            if "store" in ctx.__dict__:
                ctx.store.dispose()
        _contexts.clear()
