"""Inputs that never trap the user: `esc` leaves any of them for its pane's list, where the
single-letter commands work again. While an input has focus it takes every printable key, so
a digit or a letter typed there is text, never a command."""

from __future__ import annotations

from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Input


def focus_at_once(widget: Widget) -> bool:
    """Focus `widget` now, so the very next key is its (`Widget.focus` waits for a refresh,
    and a key already queued went to the widget left behind); whether it has the focus. A
    widget in a pane the switch has not shown yet is not focusable: it gets the focus after
    the refresh instead."""
    widget.screen.set_focus(widget)
    if widget.app.focused is not widget:
        widget.focus()
    return widget.app.focused is widget


class PaneInput(Input):
    BINDINGS = [Binding("escape", "leave", "Leave the field", id="input.leave")]

    def action_leave(self) -> None:
        for ancestor in self.ancestors:
            if (ancestor.id or "").endswith("-pane"):
                tables = ancestor.query("DataTable")
                if tables:
                    tables.first().focus()
                    return
        self.screen.set_focus(None)
