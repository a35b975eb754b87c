"""Applications on top of the library: the end-to-end demo, its scripted stream sessions and its
drift episode. They may use everything below them (`training`, `serving`, the stream, online
learning); nothing in the library imports them (the import-linter contracts in pyproject.toml)."""
