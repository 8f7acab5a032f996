"""The four panes of the studio: Dataset, Train, Queue, Gallery."""
