"""Session store: where identity sources put "user U was at address A from T1 to T2"."""

from processor.sessions.memory import MemorySessionStore
from processor.sessions.store import SessionLookup, SessionStore

__all__ = ["MemorySessionStore", "SessionLookup", "SessionStore"]
