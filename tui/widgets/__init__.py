"""Widgets the panes share: image previews and the loss plot."""
