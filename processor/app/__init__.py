"""The composition root: the whole config, building the components, their lifecycle."""
