"""The four panes of the studio: Dataset, Train, Queue, Gallery."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from textual.css.query import NoMatches
from textual.widget import Widget


@contextmanager
def filling(pane: Widget) -> Iterator[None]:
    """A pane filling in its children as it mounts. The panes mount lazily, so one can mount
    while the app quits (`q` the instant it opens) and its children are already being removed:
    then there is nothing to fill in, and that is no error. A child missing otherwise is a bug,
    and raises."""
    try:
        yield
    except NoMatches:
        app = pane.app
        if pane.is_attached and app.is_running and app.return_code is None:
            raise
