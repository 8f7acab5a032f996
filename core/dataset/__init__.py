"""The photo set: files are listed and decoded (`files`), measured and cached (`measure`),
judged against each other and the settings (`judge`), captioned (`captions`), cut to aspect
buckets (`buckets`), scanned as a whole (`scan`) and summarised as advice (`report`).

This package's `__init__` stays import-free so the UI can read the statuses without numpy.
"""

OK, WARN, SKIPPED = "ok", "warn", "skipped"
STATUSES = (OK, WARN, SKIPPED)
