"""The Authorize balloon as an ipywidgets 8 widget (``pip install 'jupyter-connauth[widgets]'``).

One output carries the widget's view and, for frontends without a widget manager
(nbclient, papermill, nbconvert, a JupyterLab without jupyterlab-widgets), the HTML and
text of :class:`~.balloon.Balloon`: the frontend shows what it can render. The widget
has the Authorize link (a link, so the IdP's popup opens from the click and is not
blocked), the live countdown and a Cancel button.

Cancel while the cell waits: the cell blocks the main shell, so a click must be handled
elsewhere. ipykernel 7 handles comm messages in a kernel subshell (its own thread) when
the frontend sends them on one: JupyterLab ≥ 4.4 does by default (Settings → Kernels →
"Kernel Comms over subshells"). ipykernel 7 routes a comm's messages back to the
(sub)shell that last published on it (``BaseComm._reply_subshell_for``): the Cancel
button's comm, opened by the main shell, forgets that, so the click reaches the
subshell the frontend sent it on and sets an event the wait loop polls.
(jupyter-ui-poll 1.1.0 calls ``Kernel.do_one_iteration``, which ipykernel 7.4 no longer
has: it silently processes nothing there.) Where no subshell carries the click, Cancel
acts once the wait ends; the Interrupt button (Ctrl-C) always works.

When the flow is over the output is replaced by one line and every widget is emptied
and closed, so no authorize URL stays in the saved notebook, in its outputs or in the
widget state a frontend may save in its metadata.
"""

from __future__ import annotations

import html
from importlib import metadata
from typing import Any

from .balloon import Balloon, authorize_link, balloon_head
from .client import ConsentNeeded, DeviceCode

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def widgets_available() -> bool:
    """ipywidgets 8 is installed (the kernel side of the widget balloon)."""
    try:
        return int(metadata.version("ipywidgets").split(".")[0]) >= 8
    except (metadata.PackageNotFoundError, ValueError):
        return False


def _click_on_any_shell(comm: Any) -> None:
    """Let the frontend's comm messages reach the subshell it sends them on (see the
    module's docstring); no-op on kernels without ipykernel 7's routing."""
    lock = getattr(comm, "_reply_subshell_lock", None)
    if lock is None:
        return
    with lock:
        vars(comm).pop("_reply_subshell_id", None)
        getattr(comm, "_reply_subshell_ids", {}).clear()


class WidgetBalloon(Balloon):
    """The balloon as a widget, with :class:`Balloon`'s HTML and text as the fallback."""

    ticks_every_second = True

    def __init__(self, consent: ConsentNeeded, idp: str) -> None:
        super().__init__(consent, idp, rich=True)
        import ipywidgets as w

        if isinstance(consent, DeviceCode):
            from .device_prompt import device_html

            head = w.HTML(device_html(consent, idp, ""))
            link = w.HTML("")
        else:
            head = w.HTML(balloon_head(consent, idp))
            link = w.HTML(authorize_link(consent))
        self._status = w.HTML("", _dom_classes=["connauth-status"])
        cancel = w.Button(description="Cancel", _dom_classes=["connauth-cancel"])
        cancel.layout.width = "auto"
        cancel.on_click(lambda _button: self.cancel_requested.set())
        row = w.HBox([link, cancel, self._status])
        row.layout.align_items = "center"
        self._box = w.VBox([head, row], _dom_classes=["connauth-balloon", "connauth-widget"])
        self._box.layout.border = "1px solid #d0a000"
        self._box.layout.padding = "4px 10px"
        self._box.layout.max_width = "46em"
        self._texts: list[Any] = [head, link, self._status]
        self._widgets: list[Any] = [*self._texts, cancel, row, self._box]
        _click_on_any_shell(cancel.comm)

    def _bundle(self, status: str) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(super()._bundle(status))
        view = {"model_id": self._box.model_id, "version_major": 2, "version_minor": 0}
        bundle[WIDGET_VIEW] = view
        return bundle

    def show(self, status: str) -> None:
        """The countdown updates the widget only: replacing the output would re-render
        the widget under the user's click (the fallback keeps the first status)."""
        self._status.value = html.escape(status)
        if self._handle is None:
            super().show(status)

    def _close(self) -> None:
        """Emptied, then closed: frontends that save widget state (nbclient and
        papermill do, closed widgets included) keep no link."""
        for widget in self._texts:
            widget.value = ""
        for widget in reversed(self._widgets):
            widget.close()
        self._widgets.clear()
        self._texts.clear()

    def closed(self, status: str) -> None:
        super().closed(status)
        self._close()

    def gone(self) -> None:
        super().gone()
        self._close()

    def done(self, identity: str | None) -> None:
        super().done(identity)
        self._close()
