"""A widget that mounts when asked, not with the screen: the hidden panes wait until the first
screen (the photo list) is drawn, or until their tab is opened. Textual's Lazy mounts them
right after the first refresh, which is before the photo scan lands: their CSS and compose
then delayed the first full screen by a sixth (bench.tui)."""

from __future__ import annotations

from textual.widget import Widget


class Later(Widget):
    DEFAULT_CSS = "Later { display: none; }"

    def __init__(self, widget: Widget):
        super().__init__()
        self.widget = widget
        self.revealing = False

    def reveal(self) -> None:
        """Mount the widget in this placeholder's place (once; at once if called again)."""
        parent = self.parent
        if self.revealing or parent is None:
            return
        self.revealing = True

        async def swap() -> None:
            await parent.mount(self.widget, after=self)
            await self.remove()
        self.call_later(swap)
