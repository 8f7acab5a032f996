"""The footer: the keys that apply here, fitted to the terminal's width. When they do not fit,
descriptions go first (from the right), then keys; `? help` always stays, and lists the rest.
At 80 columns Textual's own footer cut off help, promote and pause."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ID = "app.help"


def fit(items: list[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """(key, description) pairs that fit `width`, in order; the last pair (help) is kept."""
    items = list(items)

    def cost(pairs: list[tuple[str, str]]) -> int:  # a key, a space, its text, a gap
        return sum(len(k) + (len(d) + 1 if d else 0) + 1 for k, d in pairs)

    for index in reversed(range(len(items) - 1)):
        if cost(items) <= width:
            return items
        items[index] = (items[index][0], "")
    while cost(items) > width and len(items) > 1:
        del items[-2]
    return items


class KeyFooter(Footer):
    def __init__(self, **kwargs):
        super().__init__(compact=True, show_command_palette=False, **kwargs)

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        shown: dict[str, tuple] = {}
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in shown:
                shown[binding.action] = (binding, enabled, tooltip)
        palette = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if palette is not None and self.app.ENABLE_COMMAND_PALETTE:
            shown.setdefault(palette[1].action, (palette[1], palette[2], palette[3]))
        # Help last, so it is the one kept when the width runs out.
        order = sorted(shown.values(), key=lambda b: b[0].id == HELP_ID)
        keys = [self.app.get_key_display(b) for b, _, _ in order]
        pairs = fit([(k, b.description) for k, (b, _, _) in zip(keys, order, strict=True)],
                    self.size.width or self.app.size.width)
        descriptions = dict(pairs)
        for key, (binding, enabled, tooltip) in zip(keys, order, strict=True):
            if key in descriptions:
                yield FooterKey(binding.key, key, descriptions[key], binding.action,
                                disabled=not enabled,
                                tooltip=tooltip or binding.description).data_bind(
                                    compact=Footer.compact)

    def on_resize(self) -> None:
        self.call_after_refresh(self.recompose)
