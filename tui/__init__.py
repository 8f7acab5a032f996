"""lorabooth's terminal UI. It never imports torch, diffusers, peft, transformers or accelerate:
it reaches the engine through the workspace store, and starts in a fraction of a second."""
