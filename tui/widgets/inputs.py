"""Inputs that never trap the user: `esc` leaves any of them for its pane's list, where the
single-letter commands work again. While an input has focus it takes every printable key, so
a digit or a letter typed there is text, never a command."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


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
