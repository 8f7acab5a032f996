"""Flux models: which base model it is and what differs between them (`registry`), where its
weights are (`resolve`), loading them (`load`), the built-in tiny demo model (`demo`), and the
one owner of the loaded pipeline (`owner`). Nothing here downloads anything; torch is imported
only by what loads weights."""
