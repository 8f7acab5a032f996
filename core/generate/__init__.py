"""Making images: recipes (`recipe`), requests and the one request builder (`request`), PNGs and
contact sheets on disk (`images`), and the warm `Generator` over the owner's pipeline
(`generator`). Only `generator` imports torch."""
