"""Session store: where identity sources put "user U was at address A from T1 to T2"."""

from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.store import SessionLookup, SessionStore

__all__ = ["MemorySessionStore", "SessionLookup", "SessionStore"]
