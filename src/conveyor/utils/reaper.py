"""The step process as its descendants' subreaper, so nothing it started can slip out of reach.

A child that daemonizes (forks, calls `setsid`, and its parent exits) is normally re-parented to init, out of the
step's process group and out of its process tree: cancelling the step could no longer find it. With
PR_SET_CHILD_SUBREAPER set on the step process, such orphans are re-parented to the step process instead, so they
stay in its tree, where the `local` step operator's cancel (`conveyor.utils.procs.kill_tree`) finds them; and when
the step ends on its own, what it left running is ended with it.

Linux only; elsewhere (or when prctl is refused) this does nothing and the process group is all there is.
"""

from __future__ import annotations

import os

__all__ = ["SUBREAPER_ENV", "become_subreaper", "end_descendants"]

#: set (to "1") in a step's environment by the operators that want the step process to keep its descendants
SUBREAPER_ENV = "CONVEYOR_STEP_SUBREAPER"
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make orphaned descendants of this process re-parent to it; False where Linux does not allow it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def end_descendants(grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace`, whatever this process's descendants still run."""
    from conveyor.utils.procs import descendants, kill_pids

    left = sorted(descendants([os.getpid()]))
    if left:
        kill_pids(left, grace)
