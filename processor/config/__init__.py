"""Config plumbing shared by every room: scalar types, secrets, TLS files, loading.

Each room declares its own section in its ``config.py``; ``processor.app.config``
assembles them into the whole ``Config``.
"""
