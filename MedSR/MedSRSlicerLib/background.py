"""Run slow, pure-Python work (torch import, time estimates) off Slicer's GUI thread.

The panel starts a :class:`BackgroundCall` and polls :meth:`BackgroundCall.done` from a Qt timer; the
call itself never touches MRML or Qt (Slicer's scene and widgets belong to the main thread).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class BackgroundCall:
    """``function()`` running in a daemon thread; its result or exception is collected on the caller's thread."""

    def __init__(self, function: Callable[[], Any], name: str = "MedSR background") -> None:
        self._outcome: dict[str, Any] = {}
        self.threadIdent: Optional[int] = None

        def work() -> None:
            self.threadIdent = threading.get_ident()
            try:
                self._outcome["result"] = function()
            except BaseException as error:  # handed to the caller by result()
                self._outcome["error"] = error

        self._thread = threading.Thread(target=work, name=name, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        """True once ``function`` returned or raised (never blocks)."""
        return not self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block up to ``timeout`` seconds; True when finished (for scripts and tests, not the GUI)."""
        self._thread.join(timeout)
        return self.done()

    def result(self) -> Any:
        """The return value, or re-raises ``function``'s exception. Only after :meth:`done` is True."""
        if not self.done():
            raise RuntimeError("BackgroundCall.result() before the call finished")
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]
