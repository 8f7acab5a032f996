"""The lists' shared keys: j/k a row, g/G (home/end) the first and last row, as in vim, less
and lazygit."""

from __future__ import annotations

from textual.widgets import DataTable


def move_cursor(table: DataTable, where: str) -> None:
    if where == "down":
        table.action_cursor_down()
    elif where == "up":
        table.action_cursor_up()
    elif table.row_count:
        table.move_cursor(row=0 if where == "top" else table.row_count - 1)
